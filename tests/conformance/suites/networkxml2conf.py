"""networkxml2conf: the dnsmasq configuration and DHCP hosts file of a network."""

from __future__ import annotations

from services.network.dnsmasq_conf import DnsmasqFiles, dnsmasq_config
from shared.conf.network import parse_network
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def _files(suite: Suite, case: Case) -> DnsmasqFiles:
    net = parse_network(suite.read(case["input"]))
    return dnsmasq_config(net, config_dir=case["config_dir"], pidfile=case.get("pidfile"))


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        return expect_error(lambda: _files(suite, case))
    files = _files(suite, case)
    conf = compare_text(files.conf, suite.read(case["expected"]))
    want_hosts = case.get("expected_hostsfile")
    if not conf.passed or (want_hosts is None and files.hostsfile is None):
        return conf
    if want_hosts is None:
        return Outcome(False, "a hosts file was produced where none is expected")
    if files.hostsfile is None:
        return Outcome(False, "no hosts file produced")
    return compare_text(files.hostsfile, suite.read(want_hosts))
