"""Hardware detection (CPU, RAM, GPUs) and the model recommendation ``bastion init`` writes."""

from bastion.hardware.detect import detect
from bastion.hardware.info import CpuInfo, GpuInfo, HardwareInfo
from bastion.hardware.recommend import Recommendation, recommend

__all__ = ["CpuInfo", "GpuInfo", "HardwareInfo", "Recommendation", "detect", "recommend"]
