"""Typed configuration: one pydantic model per section of ``bastion.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which model answers and how it is reached."""

    backend: Literal["embedded", "openai", "ollama", "cluster"] = "embedded"
    name: str = "smollm2-135m"
    path: Path | None = Field(default=None, description="GGUF file; default is the shipped model")
    base_url: str | None = Field(default=None, description="for openai/ollama backends")
    api_key: SecretStr | None = None
    n_ctx: int = Field(default=4096, ge=256, le=1_048_576)
    n_threads: int | None = Field(default=None, ge=1)
    n_gpu_layers: int = 0
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    native_tools: bool | None = Field(
        default=None, description="use the server's native tool calling; None = decide by backend"
    )


class AgentConfig(_Section):
    """The agent loop."""

    max_steps: int = Field(default=6, ge=1, le=100)
    system_prompt: str = (
        "You are bastion, a helpful assistant running on the user's own machine. "
        "Use a tool when the question needs facts from files, the shell or the web; "
        "otherwise answer directly and briefly."
    )
    workspace: Path | None = Field(default=None, description="tools' root; default HOME/workspace")


class ApiConfig(_Section):
    """The REST API server."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    token: SecretStr | None = None


class LimitsConfig(_Section):
    """Resource limits for sandboxed processes."""

    wall_seconds: float = Field(default=30.0, gt=0)
    cpu_seconds: int = Field(default=30, ge=1)
    memory_mb: int = Field(default=512, ge=16)
    max_processes: int = Field(default=64, ge=1)
    file_size_mb: int = Field(default=64, ge=1)
    output_bytes: int = Field(default=64_000, ge=1024)


ToolRule = Literal["allow", "deny", "ask"]
Risk = Literal["low", "medium", "high", "critical"]


class SecurityConfig(_Section):
    """The gateway: policy, approval, sandbox, audit."""

    sandbox: Literal["bubblewrap", "none"] = "bubblewrap"
    tools: dict[str, ToolRule] = Field(
        default_factory=dict, description="per-tool rule; tools not listed follow their risk"
    )
    approval_threshold: Risk = "high"
    approval_timeout_s: float = Field(default=120.0, gt=0)
    allow_private_network: bool = Field(
        default=False, description="let web_fetch reach loopback/private addresses"
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)


class HardwareConfig(_Section):
    """What ``bastion init`` detected (informational; used for recommendations)."""

    cpu: str | None = None
    cores: int | None = None
    ram_gb: float | None = None
    gpu: str | None = None
    accelerator: Literal["cpu", "cuda", "rocm", "metal"] = "cpu"
    recommended_model: str | None = None


class Config(_Section):
    """The whole of ``bastion.yaml``."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
