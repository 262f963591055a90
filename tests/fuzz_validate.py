"""Coverage-guided fuzzing of the message validators with atheris (libFuzzer).

    python tests/fuzz_validate.py -max_total_time=60           # as long as you like
    python tests/fuzz_validate.py -atheris_runs=20000          # a fixed number of inputs

Any exception from a validator, or the consumers' fast path (schemas/fast.py) answering otherwise
than `validate_event`, is a crash: libFuzzer stops and writes the input to crash-<sha1>.
`tests/test_hostile_input.py::test_atheris_bounded_run` runs it for a bounded time in `make test`.
"""
import sys

import atheris

with atheris.instrument_imports():
    from schemas import Rejected, validate_event, validate_item, validate_recommendation
    from schemas._check import MAX_REASON_CHARS
    from schemas.fast import fast_validate_event

SEEDS = [
    b'{"v":1,"event_id":"e1","user_id":"u1","item_id":"i1","type":"view","ts":1730000000000}',
    b'{"event_id":"e","user_id":"u","type":"search","query":"red shoes","ts":1730000000000,"context":{"a":1}}',
    b'{"item_id":"i1","title":"Shoe","category":["a","b"],"brand":"x","price":3.5}',
]


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 3)
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    if choice == 3:     # splice fuzz bytes into a valid message, where most of the checks live
        seed = SEEDS[len(raw) % len(SEEDS)]
        cut = len(raw) % (len(seed) + 1)
        raw = seed[:cut] + raw + seed[cut:]
    for fn in (validate_event, validate_item, validate_recommendation):
        got = fn(raw)
        if isinstance(got, Rejected) and len(got.reason) > MAX_REASON_CHARS:
            raise AssertionError(f"reason over {MAX_REASON_CHARS} characters: {got.reason[:80]!r}")
    if fast_validate_event(raw) != validate_event(raw):    # the consumers' fast path: the same answer
        raise AssertionError(f"the fast path disagrees with validate_event on {raw[:80]!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
