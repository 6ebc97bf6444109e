"""``python -m agents.qemu``: run this host's QEMU agent until SIGINT/SIGTERM."""

from agents.qemu.service import AgentSettings, QemuAgent
from shared.util.process import run_main

raise SystemExit(run_main(QemuAgent, AgentSettings))
