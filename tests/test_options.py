"""Options as validated objects: a scoring or detection option out of range is refused where the
options are made, with a usage error (exit 2, HTTP 422), before any audio is decoded."""

from __future__ import annotations

import math

import pytest

from soundsift.core.scoring import ScoringOptions
from soundsift.detection.events import EventRules
from soundsift.detection.windows import DetectOptions
from soundsift.errors import EXIT_USAGE, ConfigurationError, OptionsError


@pytest.mark.parametrize(
    "values",
    [
        {"threshold": 1.5},
        {"threshold": math.nan},
        {"min_margin": -0.1},
        {"label_thresholds": 2.0},
        {"label_thresholds": {"dog": "high"}},
    ],
)
def test_scoring_options_out_of_range_are_refused(values):
    with pytest.raises(OptionsError) as refused:
        ScoringOptions(**values)
    assert refused.value.exit_code == EXIT_USAGE and refused.value.http_status == 422


def test_scoring_options_are_frozen_and_normalised():
    options = ScoringOptions(templates=["a {}"], label_thresholds={"dog": 0.3})
    assert options.templates == ("a {}",) and options.label_thresholds == {"dog": 0.3}
    with pytest.raises(AttributeError):
        options.threshold = 0.2  # type: ignore[misc]


def test_a_classification_uses_the_options_it_was_given(classifier, esc50_clips):
    sure = classifier.classify(esc50_clips[0], "dog, rain, siren", threshold=0.0, min_margin=0.0)
    unsure = classifier.classify(esc50_clips[0], "dog, rain, siren", threshold=0.0, min_margin=1.0)
    assert not sure.uncertain and unsure.uncertain
    with pytest.raises(OptionsError):
        classifier.classify(esc50_clips[0], "dog, rain", threshold=3.0)


def test_detect_options_hold_the_event_rules_and_check_the_layout():
    options = DetectOptions(window_s=2.0, rules=EventRules(threshold=0.4, background=["speech"]))
    assert options.hop == 1.0 and options.rules.background == ("speech",)
    with pytest.raises(ConfigurationError, match="window_s"):
        DetectOptions(window_s=100.0)
    with pytest.raises(OptionsError, match="smoothing_windows"):
        EventRules(smoothing_windows=0)
