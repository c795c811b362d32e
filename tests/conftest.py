import os

from hypothesis import HealthCheck, settings

# Properties run 25 examples locally (fast feedback) and at least 200 in CI (CI=true, as .ci/run
# runs) or wherever HYPOTHESIS_PROFILE=ci is set.
for name, examples in (("dev", 25), ("ci", 200)):
    settings.register_profile(
        name, max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
