"""probes/events.h and agent/events.py describe the same bytes: compiled sizes and offsets agree."""

from __future__ import annotations

import subprocess
from pathlib import Path

from agent import events

PROBES = Path(__file__).resolve().parent.parent / "probes"

PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
typedef uint8_t u8; typedef uint16_t u16; typedef uint32_t u32; typedef int32_t s32; typedef uint64_t u64;
#include "events.h"
#define OFF(s, f) printf(#s "." #f " %zu\n", offsetof(struct s, f))
int main(void) {
    printf("data_event.size %zu\n", sizeof(struct data_event));
    OFF(data_event, pos); OFF(data_event, tgid); OFF(data_event, gen); OFF(data_event, len);
    OFF(data_event, direction); OFF(data_event, source); OFF(data_event, flags); OFF(data_event, payload);
    printf("ctl_event.size %zu\n", sizeof(struct ctl_event));
    OFF(ctl_event, boot_ns); OFF(ctl_event, kind); OFF(ctl_event, fd); OFF(ctl_event, cgroup_id);
    OFF(ctl_event, family); OFF(ctl_event, laddr); OFF(ctl_event, raddr); OFF(ctl_event, comm);
    OFF(ctl_event, exe);
    printf("backend.size %zu\n", sizeof(struct backend));
    printf("stat.max %d\n", STAT_MAX);
    printf("chunk.max %d\n", CHUNK_MAX);
    return 0;
}
"""


def compiled_layout(tmp_path: Path) -> dict[str, int]:
    src = tmp_path / "layout.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-I", str(PROBES), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_layouts_match(tmp_path: Path) -> None:
    c = compiled_layout(tmp_path)
    assert c["data_event.payload"] == events.DATA_HEADER_SIZE == events.DATA_HEADER.size
    assert c["data_event.size"] == events.DATA_HEADER_SIZE + events.CHUNK_MAX
    assert c["chunk.max"] == events.CHUNK_MAX
    offsets = [c[f"data_event.{f}"] for f in ("pos", "tgid", "gen", "len", "direction", "source", "flags")]
    assert offsets == [8, 16, 20, 24, 28, 29, 30]
    assert c["ctl_event.size"] == events.CTL_EVENT_SIZE == events.CTL_EVENT.size
    assert [c[f"ctl_event.{f}"] for f in ("boot_ns", "kind", "fd", "cgroup_id", "family", "laddr",
                                          "raddr", "comm", "exe")] == [8, 16, 32, 40, 48, 56, 72, 88, 104]
    assert c["backend.size"] == events.BACKEND.size
    assert c["stat.max"] == len(events.STAT_NAMES)
