import os

import pytest

os.environ.setdefault("TAMPERLAB_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Each test session builds its tiny models and caches in a fresh directory."""
    if "TAMPERLAB_TEST_CACHE" in os.environ:  # opt-in reuse across local runs
        os.environ["TAMPERLAB_CACHE"] = os.environ["TAMPERLAB_TEST_CACHE"]
    else:
        os.environ["TAMPERLAB_CACHE"] = str(tmp_path_factory.mktemp("tamperlab-cache"))
    yield


@pytest.fixture(scope="session")
def tiny():
    from tamperlab.models import load_model

    return load_model("tiny-llama")
