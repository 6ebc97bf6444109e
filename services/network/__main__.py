"""``python -m services.network``: run this host's network service until SIGINT/SIGTERM."""

from services.network.service import NetworkService, NetworkSettings
from shared.util.process import run_main

raise SystemExit(run_main(NetworkService, NetworkSettings))
