"""``python -m services.nwfilter``: run the nwfilter service until SIGINT/SIGTERM."""

from services.nwfilter.service import NWFilterService, NWFilterSettings
from shared.util.process import run_main

raise SystemExit(run_main(NWFilterService, NWFilterSettings))
