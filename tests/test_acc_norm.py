"""acc_norm, defined as lm-evaluation-harness defines it: log-likelihood per character of the option."""

from __future__ import annotations

from runner.backends.loglik import predictions


def test_acc_norm_divides_by_characters_not_bytes():
    # "éé" is 2 characters (4 UTF-8 bytes), "abc" 3. acc takes the larger sum (-2.5, "éé");
    # per character "abc" wins (-1.1 > -1.25), where per byte "éé" would (-0.625).
    assert predictions([-2.5, -3.3], ["éé", "abc"]) == (0, 1)
    # A Greek letter is one character (two bytes): "β" scores -1.5 per character, "ab" -1.25.
    assert predictions([-1.5, -2.5], ["β", "ab"]) == (0, 1)


def test_ties_go_to_the_first_option():
    assert predictions([-2.0, -2.0], ["ab", "cd"]) == (0, 0)
