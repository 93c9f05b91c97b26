"""DecodingSettings: one typed file of ranking settings per generator, with the old config attributes read once."""

from __future__ import annotations

import json
import logging

import pytest

from sidrec.decoding import DEFAULT_BEAM_SIZE, DecodingSettings


def test_defaults_round_trip_and_validation(tmp_path):
    settings = DecodingSettings()
    assert settings.beam_size == DEFAULT_BEAM_SIZE == 20 and settings.dense_weight == 0.0
    chosen = settings.replace(beam_size=50, dense_weight=4.0, prior_weight=0.25, dense_weight_plain=8.0)
    chosen.save(tmp_path)
    assert json.loads((tmp_path / "decoding.json").read_text())["format_version"] == 1
    assert DecodingSettings.load(tmp_path) == chosen and chosen.plain_weight == 8.0
    assert settings.plain_weight == settings.dense_weight  # no separate weight without the correction
    with pytest.raises(ValueError, match="prior_weight must be in"):
        DecodingSettings(prior_weight=1.5)
    (tmp_path / "decoding.json").write_text(json.dumps({"beam_size": 20, "hybird_weight": 1.0}))
    with pytest.raises(ValueError, match="unknown decoding settings.*hybird_weight"):
        DecodingSettings.load(tmp_path)
    (tmp_path / "decoding.json").write_text("{not json")
    with pytest.raises(ValueError, match="decoding.json"):
        DecodingSettings.load(tmp_path)


def test_older_checkpoints_keep_their_tuned_ranking_from_config_attributes(tmp_path, caplog):
    from transformers import T5Config

    legacy = T5Config(beam_size=50, hybrid_weight=16.0, hybrid_weight_plain=32.0, prior_weight=0.5)
    with caplog.at_level(logging.INFO, logger="sidrec.decoding.settings"):
        settings = DecodingSettings.load(tmp_path / "old-generator", legacy_config=legacy)
        DecodingSettings.load(tmp_path / "old-generator", legacy_config=legacy)
    assert settings == DecodingSettings(beam_size=50, dense_weight=16.0, dense_weight_plain=32.0, prior_weight=0.5)
    notes = [r for r in caplog.records if "older sidrec" in r.getMessage()]
    assert len(notes) == 1 and "hybrid_weight" in notes[0].getMessage()  # said once per folder
    assert DecodingSettings.load(tmp_path / "nothing", legacy_config=T5Config()) == DecodingSettings()


def test_a_loaded_generator_searches_with_the_beam_it_was_validated_with(trained_run):
    from sidrec.utils.run_folder import RunFolder

    loaded = RunFolder(trained_run).generator()
    assert loaded.model.generation_config.num_beams == loaded.settings.beam_size
