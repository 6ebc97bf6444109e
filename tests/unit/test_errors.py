"""Errors keep libvirt's codes, names and wording across the bus."""

from __future__ import annotations

from shared.util.errors import ErrorCode, ErrorDomain, VirtError


def test_message_has_libvirt_prefix() -> None:
    err = VirtError(ErrorCode.NO_SECRET, "no secret with matching uuid 'x'", ErrorDomain.SECRET)
    assert str(err) == "Secret not found: no secret with matching uuid 'x'"
    assert err.name == "VIR_ERR_NO_SECRET"
    assert err.domain_name == "VIR_FROM_SECRET"


def test_round_trip_through_json_body() -> None:
    err = VirtError(ErrorCode.STORAGE_VOL_EXIST, "vol1", ErrorDomain.STORAGE)
    back = VirtError.from_dict(err.to_dict())
    assert (back.code, back.domain, back.message) == (err.code, err.domain, err.message)


def test_unknown_code_becomes_internal_error() -> None:
    back = VirtError.from_dict({"code": 99999, "message": "m"})
    assert back.code is ErrorCode.INTERNAL_ERROR
    assert back.message == "m"
