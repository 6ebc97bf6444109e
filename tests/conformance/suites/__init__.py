"""One adapter module per suite, named after the suite (``secretxml2xml.py``, ...).

Each module defines ``run_case(suite: Suite, case: dict) -> Outcome``; the
runner finds it by the suite name in the manifest, so a new suite needs only
its module here.
"""
