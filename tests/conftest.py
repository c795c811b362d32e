import os

import pytest
from hypothesis import HealthCheck, settings

try:  # the Qwen tests skip themselves where transformers is missing
    from entropy_prune.qwen.testing import FAMILIES, make_model, make_processor
except ImportError:
    FAMILIES = ()

# Properties run 25 examples locally (fast feedback) and at least 200 in CI (CI=true, as .ci/run
# runs) or wherever HYPOTHESIS_PROFILE=ci is set.
for name, examples in (("dev", 25), ("ci", 200)):
    settings.register_profile(
        name, max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    """(name, stock processor, random-weight model) of each supported Qwen-VL family."""
    proc = make_processor(family=request.param)
    return request.param, proc, make_model(proc.tokenizer, request.param)
