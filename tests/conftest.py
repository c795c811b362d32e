from hypothesis import HealthCheck, settings

# Every property runs at least 200 examples, locally and in CI.
settings.register_profile(
    "entropy_prune", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("entropy_prune")
