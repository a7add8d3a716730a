"""A hub model that is gated, not on the hub, or out of reach and not cached gets teacli's own one line (what to
download, how to log in), never diffusers' text about local_files_only. The hub's failures are raised offline from
monkeypatched downloaders, as huggingface_hub raises them."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
import torch
from huggingface_hub import errors as hub_errors

from teacli.cli import app
from teacli.models.catalog import Component, builtin_presets
from teacli.models.loading import ModelError, load_pipeline, resolve_preset
from teacli.models.locations import hub_failure

REPO = "someone/never-downloaded-flux"
# The HTTP client huggingface_hub uses (httpx, or httpx2 in its 2.x), for building its errors as it does.
HTTP = sys.modules[hub_errors.Response.__module__.split(".")[0]]


def http_error(kind: type, status: int) -> Exception:
    request = HTTP.Request("GET", f"https://huggingface.co/api/models/{REPO}")
    return kind(f"{status} Client Error", response=HTTP.Response(status, request=request))


FAILURES = {
    "gated": (lambda: http_error(hub_errors.GatedRepoError, 401), "is gated on the Hugging Face Hub"),
    "not-found": (lambda: http_error(hub_errors.RepositoryNotFoundError, 404), "is not on the Hugging Face Hub"),
    "unreachable": (lambda: HTTP.ConnectError("[Errno -2] Name or service not known"), "could not be reached"),
    "not-cached": (lambda: hub_errors.LocalEntryNotFoundError("not in the cache"), "could not be reached"),
    "offline": (lambda: hub_errors.OfflineModeIsEnabled("offline mode is enabled"), "HF_HUB_OFFLINE is set"),
}


def assert_teacli_words(message: str, words: str) -> None:
    assert message.startswith(REPO) and words in message, message
    assert "\n" not in message and "local_files_only" not in message and "stacktrace" not in message, message
    if words == "is gated on the Hugging Face Hub":
        assert f"https://huggingface.co/{REPO}" in message and "`hf auth login`" in message
    elif words != "is not on the Hugging Face Hub":
        assert f"`hf download {REPO}`" in message and "`hf auth login`" in message


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_looking_up_a_hub_id_that_fails_says_what_to_do(monkeypatch, case):
    make, words = FAILURES[case]

    def hf_hub_download(*args, **kwargs):
        raise make()

    monkeypatch.setattr("diffusers.configuration_utils.hf_hub_download", hf_hub_download)
    with pytest.raises(ModelError) as raised:
        resolve_preset(REPO)
    assert_teacli_words(str(raised.value), words)


@pytest.mark.parametrize("case", ["gated", "not-found", "unreachable", "offline"])
def test_loading_a_preset_whose_hub_model_fails_says_what_to_do(monkeypatch, case):
    """diffusers asks the hub for the model's file list first (model_info): its failure reaches the user in
    teacli's words, after diffusers has looked in the (empty) cache."""
    make, words = FAILURES[case]

    def model_info(*args, **kwargs):
        raise make()

    monkeypatch.setattr("diffusers.pipelines.pipeline_utils.model_info", model_info)
    monkeypatch.setattr("teacli.models.weights.hub_files", lambda repo: None)  # never asked: the hub said no
    preset = replace(builtin_presets()["flux-dev"], model=REPO)
    with pytest.raises(ModelError) as raised:
        load_pipeline(preset, torch.device("cpu"), torch.float32)
    assert_teacli_words(str(raised.value), words)


def test_a_failure_wrapped_by_a_library_is_found_in_its_chain():
    """transformers and diffusers re-raise the hub's errors as OSError (with `from`, or while handling them)."""
    try:
        try:
            raise http_error(hub_errors.GatedRepoError, 403)
        except hub_errors.GatedRepoError as gated:
            raise OSError("You are trying to access a gated repo.") from gated
    except OSError as wrapped:
        found = hub_failure(wrapped, REPO)
    assert found is not None and "is gated" in str(found)
    try:
        try:
            raise HTTP.ConnectError("no route")
        except Exception:  # noqa: BLE001 - as diffusers' load_config does: raised while handling, no `from`
            raise OSError("We couldn't connect to 'https://huggingface.co'")  # noqa: B904
    except OSError as wrapped:
        found = hub_failure(wrapped, REPO)
    assert found is not None and "could not be reached" in str(found)
    assert hub_failure(TimeoutError("timed out"), REPO) is not None


def test_other_failures_are_left_to_the_other_explanations():
    assert hub_failure(OSError("Error no file named model_index.json found in directory x."), REPO) is None
    assert hub_failure(ValueError("unexpected key"), REPO) is None


def test_the_cli_says_it_in_one_line(runner, monkeypatch):
    def hf_hub_download(*args, **kwargs):
        raise http_error(hub_errors.GatedRepoError, 401)

    monkeypatch.setattr("diffusers.configuration_utils.hf_hub_download", hf_hub_download)
    result = runner.invoke(app, ["generate", "a red circle", "--model", REPO])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("INFO ")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {REPO} is gated"), result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_a_gated_component_from_another_repository_says_what_to_do(teacli_cache, monkeypatch):
    """A component a preset loads from its own repository (HiDream's Llama text encoder, gated): transformers
    turns the hub's GatedRepoError into an OSError of its own words; teacli's line names that repository."""
    import transformers.utils.hub

    def hf_hub_download(*args, **kwargs):
        raise http_error(hub_errors.GatedRepoError, 403)

    monkeypatch.setattr(transformers.utils.hub, "hf_hub_download", hf_hub_download)
    component = Component("CLIPTextModel", REPO, "text_encoder")
    preset = replace(builtin_presets()["tiny-flux"], components={"text_encoder": component})
    with pytest.raises(ModelError) as raised:
        load_pipeline(preset, torch.device("cpu"), torch.float32)
    assert_teacli_words(str(raised.value), "is gated on the Hugging Face Hub")
