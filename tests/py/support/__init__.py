"""Helpers shared by the test areas of tests/py (tests/py/README.md): imported as
`from support.<module> import ...` (tests/py is on sys.path: pytest puts the directory of the
root conftest.py there).  Nothing here is a test module: pytest collects only test_*.py files,
so the shared cases in attest_cases.py and attest_redis_cases.py run where they are imported."""
