"""``python -m services.storage``: run this host's storage service until SIGINT/SIGTERM."""

from services.storage.service import StorageService, StorageSettings
from shared.util.process import run_main

raise SystemExit(run_main(StorageService, StorageSettings))
