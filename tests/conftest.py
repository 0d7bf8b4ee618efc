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


_SHARED: list = []  # session-scoped models, watched even if a test empties the load cache


@pytest.fixture(scope="session")
def tiny():
    from tamperlab.models import load_model

    lm = load_model("tiny-llama")
    _SHARED.append(lm)
    return lm


@pytest.fixture(autouse=True)
def _shared_models_stay_untouched():
    """Loaded models are cached per process and shared by every test (and by every run of a
    study): a test or a code path that changes their weights in place poisons the rest. Fail the
    test that did it, by name."""
    yield
    from tamperlab.models.loading import _CACHE, weights_fingerprint

    watched = {id(lm): (key[0], lm) for key, lm in _CACHE.items()}
    watched.update({id(lm): (lm.name, lm) for lm in _SHARED})
    for name, lm in watched.values():
        if not lm.fingerprint:
            continue
        now = weights_fingerprint(lm.model)
        if now != lm.fingerprint or hasattr(lm.model, "peft_config"):
            for key in [k for k, v in _CACHE.items() if v is lm]:
                _CACHE.pop(key)  # later tests that load it get a clean copy
            lm.fingerprint = now  # report each change once, at the test that made it
            pytest.fail(f"this test changed the shared model {name!r} in place "
                        f"(fingerprint -> {now})", pytrace=False)
