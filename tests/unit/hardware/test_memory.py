"""The memory a model may take here: MemAvailable + swap, bounded by the memory cgroup."""

from __future__ import annotations

import signal

from bastion.hardware.memory import OomWatch, gib, oom_kills, room

MEMINFO = "MemTotal:       24683784 kB\nMemAvailable:   20000000 kB\nSwapFree:        1000000 kB\n"
V1_GROUPS = "9:name=systemd:/\n4:memory:/box/unit\n0::/\n"
MOUNTS = ("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
          "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
          "40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")


def reader(files: dict[str, str]):  # type: ignore[no-untyped-def]
    return files.get


def test_without_a_cgroup_limit_available_memory_and_free_swap_count() -> None:
    got = room(reader({"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "0::/\n"}))
    assert got is not None
    assert got.bytes == (20000000 + 1000000) * 1024 and got.cgroup_limit is None
    assert got.describe() == "20.0 GiB available"


def test_a_v1_memory_cgroup_bounds_it_and_its_page_cache_counts_as_free() -> None:
    stat = ("cache 300\nhierarchical_memory_limit 1073741824\ntotal_inactive_file 104857600\n")
    got = room(reader({
        "/proc/meminfo": MEMINFO, "/proc/self/cgroup": V1_GROUPS, "/proc/self/mountinfo": MOUNTS,
        "/sys/fs/cgroup/memory/box/unit/memory.stat": stat,
        "/sys/fs/cgroup/memory/box/unit/memory.usage_in_bytes": str(400 << 20),
    }))
    assert got is not None
    assert got.bytes == (1 << 30) - (300 << 20) and got.cgroup_limit == 1 << 30
    assert got.describe() == "724 MiB available (within this cgroup's 1.0 GiB limit)"


def test_a_v1_hierarchy_without_a_limit_is_no_bound() -> None:
    got = room(reader({
        "/proc/meminfo": MEMINFO, "/proc/self/cgroup": V1_GROUPS, "/proc/self/mountinfo": MOUNTS,
        "/sys/fs/cgroup/memory/box/unit/memory.stat": "hierarchical_memory_limit "
                                                       "9223372036854771712\n",
    }))
    assert got is not None and got.cgroup_limit is None


def test_cgroup_v2_takes_the_tightest_limit_on_the_way_up() -> None:
    base = "/sys/fs/cgroup/unified"
    got = room(reader({
        "/proc/meminfo": MEMINFO, "/proc/self/cgroup": "0::/app/worker\n",
        "/proc/self/mountinfo": MOUNTS,
        f"{base}/app/worker/memory.max": "max\n",
        f"{base}/app/memory.max": f"{2 << 30}\n", f"{base}/app/memory.current": f"{1 << 30}\n",
        f"{base}/app/memory.stat": f"anon 5\ninactive_file {256 << 20}\n",
    }))
    assert got is not None
    assert got.cgroup_limit == 2 << 30 and got.bytes == (2 << 30) - (768 << 20)


def test_no_meminfo_means_unknown_and_the_oom_count_is_read() -> None:
    assert room(reader({})) is None
    assert oom_kills(reader({"/proc/vmstat": "nr_free_pages 5\noom_kill 51\n"})) == 51
    assert oom_kills(reader({})) is None
    assert gib(11 << 30) == "11.0 GiB" and gib(5 << 20) == "5 MiB"


def test_an_oom_kill_is_a_sigkill_while_the_kernel_count_rose() -> None:
    files = {"/proc/vmstat": "oom_kill 7\n"}
    watch = OomWatch(reader(files))
    assert not watch.killed(-signal.SIGKILL)  # a kill -9: the count did not move
    files["/proc/vmstat"] = "oom_kill 8\n"
    assert watch.killed(-signal.SIGKILL)
    assert not watch.killed(-signal.SIGSEGV) and not watch.killed(1)
    assert not OomWatch(reader({})).killed(-signal.SIGKILL)  # no count: never claimed
