"""``python -m services.secret``: run the secret service until SIGINT/SIGTERM."""

from services.secret.service import SecretService, SecretSettings
from shared.util.process import run_main

raise SystemExit(run_main(SecretService, SecretSettings))
