"""Reward functions used by the tests through `reward.fn=toy_rewards:NAME`."""


def starts_with_digit(response: str, answer: str, **info) -> float:
    """An easy target for a random model: about 1 in 25 first tokens is a digit."""
    return float(bool(response) and response[0].isdigit())


def raises(response: str, answer: str, **info) -> float:
    raise RuntimeError("boom")
