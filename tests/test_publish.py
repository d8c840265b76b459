"""Publishing against the loopback Hub (tests/hub_server.py), in both transfer modes.

huggingface_hub does all the talking: the publish command runs in a subprocess whose
``HF_ENDPOINT`` points at a server thread of this test process. "xet" is huggingface_hub's default
(binary files go to an hf_xet ``local://`` CAS the server hands out); "lfs" sets
``HF_HUB_DISABLE_XET=1`` (basic LFS: batch, PUT, verify).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, TINY_CONFIG, TOKEN, assert_token_absent, hub_env, run_publish
from scvi_hub_workflow import publish
from scvi_hub_workflow.config import section_settings
from scvi_hub_workflow.layout import HUB_FILES

TRANSFERS = ["xet", "lfs"]
NO_VERIFY = {"verify": False}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_remote_equals_local(hub, repo_id: str, hub_dir: Path, revision: str = "main") -> None:
    for path in sorted(hub_dir.iterdir()):
        assert sha256(hub.file_bytes(repo_id, path.name, revision)) == sha256(path.read_bytes())


@pytest.mark.slow
@pytest.mark.parametrize("transfer", TRANSFERS)
def test_publishes_both_models_in_one_commit_each_and_scvi_pulls_them(
    hub, tiny_models, tmp_path, transfer
):
    for name, model in tiny_models.items():
        repo_id = f"alice/tiny-{name}"
        done = run_publish(hub, model, tmp_path / name, {"repo_id": repo_id}, transfer)
        assert done.returncode == 0, done.output

        receipt = done.receipt
        repo = hub.repo(repo_id)
        assert [c.title for c in repo.commits] == [
            "initial commit",
            f"Publish {repo_id} with scvi-hub-workflow",
        ]
        assert receipt["published"] and receipt["new_commit"]
        assert receipt["commit"] == repo.head.oid
        assert receipt["url"] == f"{hub.url}/{repo_id}"
        assert {f["path"] for f in receipt["files"]} == set(HUB_FILES)
        for entry in receipt["files"]:
            local = (model.hub_dir / entry["path"]).read_bytes()
            assert (entry["size"], entry["sha256"]) == (len(local), sha256(local))
        assert_remote_equals_local(hub, repo_id, model.hub_dir)

        # Verification, a step of certification: the downloaded commit equals the local model.
        verification = receipt["certification"]["verification"]
        assert verification["commit"] == receipt["commit"]
        assert verification["passed"] and verification["model_class"] == "SCVI"
        assert verification["cells_compared"] > 0
        assert verification["max_abs_latent_difference"] <= publish.LATENT_TOLERANCE
        assert verification["max_abs_weight_difference"] == 0

        # Certified: the exact revision, downloaded fresh, loaded without this package, with
        # held-out cells mapped onto it and its data checked against the card and provenance.
        certification = receipt["certification"]
        assert certification["passed"] and certification["revision"] == receipt["commit"]
        assert set(HUB_FILES) <= set(certification["files"])
        assert certification["ran"].startswith("scArches query mapping")
        assert certification["query_cells"] > 0
        assert any("card tissues ['blood']" in c for c in certification["data_check"]["checked"])

        # The binary files went through the transfer mode under test.
        model_pt = repo.head.files["model.pt"]
        assert model_pt.is_lfs
        if transfer == "xet":
            assert model_pt.xet_hash and model_pt.sha256 not in hub.state.lfs_objects
            assert hub.count("GET", rf"/api/models/{repo_id}/xet-write-token/") >= 1
        else:
            assert model_pt.xet_hash is None and model_pt.sha256 in hub.state.lfs_objects
            assert hub.count("PUT", r"^/_lfs/") >= 2


@pytest.mark.slow
@pytest.mark.parametrize("transfer", TRANSFERS)
def test_rerun_with_unchanged_files_makes_no_commit(hub, tiny, tmp_path, transfer):
    first = run_publish(hub, tiny, tmp_path / "1", {"repo_id": "alice/tiny", **NO_VERIFY}, transfer)
    assert first.returncode == 0, first.output
    commits_before = hub.count("POST", r"/commit/main$")

    again = run_publish(hub, tiny, tmp_path / "2", {"repo_id": "alice/tiny"}, transfer)

    assert again.returncode == 0, again.output
    assert hub.count("POST", r"/commit/main$") == commits_before
    assert hub.commit_count("alice/tiny") == 2
    assert again.receipt["new_commit"] is False
    assert again.receipt["commit"] == first.receipt["commit"]
    assert "no commit made" in again.receipt["message"]
    assert again.receipt["certification"]["verification"]["passed"]


def test_server_error_on_commit_leaves_repo_unchanged_and_a_retry_succeeds(hub, tiny, tmp_path):
    settings = {"repo_id": "alice/tiny", **NO_VERIFY}
    hub.fail_commits = [500, 503]
    failed = run_publish(hub, tiny, tmp_path / "1", settings, "lfs", extra_args=("--attempts", "2"))

    assert failed.returncode == 1 and failed.receipt is None
    assert "503" in failed.output
    assert hub.commit_count("alice/tiny") == 1  # only the repo's initial commit
    assert set(hub.repo("alice/tiny").head.files) == {".gitattributes"}

    hub.fail_commits = [500]  # one transient failure: retried within the same run
    done = run_publish(hub, tiny, tmp_path / "2", settings, "lfs")

    assert done.returncode == 0, done.output
    assert hub.count("POST", r"/commit/main$") == 4
    assert hub.commit_count("alice/tiny") == 2
    assert_remote_equals_local(hub, "alice/tiny", tiny.hub_dir)


def test_stale_parent_is_a_clear_error_and_nothing_is_overwritten(hub, tiny, tmp_path):
    settings = {"repo_id": "alice/tiny", **NO_VERIFY}
    assert run_publish(hub, tiny, tmp_path / "1", settings, "xet").returncode == 0
    (tiny.hub_dir / "README.md").write_text("---\nlibrary_name: scvi-tools\n---\n# v2\n")
    # Someone else pushes a different card between our head read and our commit.
    hub.push_before_next_commit = {"README.md": b"---\nlibrary_name: scvi-tools\n---\n# theirs\n"}

    done = run_publish(hub, tiny, tmp_path / "2", settings, "xet")

    assert done.returncode == 1 and done.receipt is None
    assert "changed while publishing" in done.output and "README.md" in done.output
    assert "Nothing was overwritten" in done.output
    assert hub.file_bytes("alice/tiny", "README.md").endswith(b"# theirs\n")
    assert [c.title for c in hub.repo("alice/tiny").commits][-1] == "someone else's push"


def test_concurrent_push_of_the_same_files_counts_as_published(hub, tiny, tmp_path):
    settings = {"repo_id": "alice/tiny", **NO_VERIFY}
    hub.push_before_next_commit = {p.name: p.read_bytes() for p in tiny.hub_dir.iterdir()}

    done = run_publish(hub, tiny, tmp_path, settings, "lfs")

    assert done.returncode == 0, done.output
    assert done.receipt["new_commit"] is False
    assert done.receipt["commit"] == hub.repo("alice/tiny").head.oid


def test_bad_token_is_a_clear_error_without_the_token(hub, tiny, tmp_path):
    bad = "hf_" + "x" * 34
    done = run_publish(hub, tiny, tmp_path, {"repo_id": "alice/tiny"}, "xet", token=bad + "\n")

    assert done.returncode == 1 and done.receipt is None
    assert "rejected the token" in done.output
    assert bad not in done.output
    assert hub.repo("alice/tiny") is None


@pytest.mark.slow
@pytest.mark.parametrize("transfer", TRANSFERS)
def test_connection_dropped_mid_upload_publishes_nothing(hub, tiny, tmp_path, transfer):
    settings = {"repo_id": "alice/tiny", **NO_VERIFY}
    hub.drop_uploads = 1000  # every upload (LFS PUT / Xet token) is cut off halfway
    # hf_xet retries for minutes by default; one quick attempt is enough to see the failure.
    xet_env = {"HF_XET_CLIENT_RETRY_MAX_ATTEMPTS": "1", "HF_XET_CLIENT_RETRY_BASE_DELAY": "100ms"}

    failed = run_publish(
        hub, tiny, tmp_path / "1", settings, transfer, extra_args=("--attempts", "1"), env=xet_env
    )

    assert failed.returncode == 1 and failed.receipt is None, failed.output
    assert hub.count("POST", r"/commit/main$") == 0
    assert set(hub.repo("alice/tiny").head.files) == {".gitattributes"}

    hub.drop_uploads = 0
    done = run_publish(hub, tiny, tmp_path / "2", settings, transfer)
    assert done.returncode == 0, done.output
    assert_remote_equals_local(hub, "alice/tiny", tiny.hub_dir)


def test_commit_naming_content_never_uploaded_is_refused(hub, tiny, tmp_path):
    # The server's integrity check behind "nothing half-published": a pointer to missing content.
    env = hub_env(hub, tmp_path / "hf-home", "lfs")
    script = (
        "import base64, json, httpx2, os\n"
        "h = {'authorization': 'Bearer ' + os.environ['HF_TOKEN']}\n"
        "e = os.environ['HF_ENDPOINT']\n"
        "httpx2.post(e + '/api/repos/create', json={'name': 'tiny'}, headers=h)\n"
        "line = {'key': 'lfsFile', 'value': {'path': 'model.pt', 'algo': 'sha256',"
        " 'oid': 'ab' * 32, 'size': 10}}\n"
        "head = json.dumps({'key': 'header', 'value': {'summary': 's'}})\n"
        "body = head + '\\n' + json.dumps(line)\n"
        "url = e + '/api/models/alice/tiny/commit/main'\n"
        "print(httpx2.post(url, content=body, headers=h).status_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "422", done.stderr
    assert hub.commit_count("alice/tiny") == 1


def test_collection_is_a_separate_step_whose_failure_keeps_the_publish(hub, tiny_models, tmp_path):
    hub.add_collection("alice/scvi-models-0123", owner="alice")
    hub.add_collection("bob/his-models-4567", owner="bob")

    mine = run_publish(
        hub,
        tiny_models["pbmc"],
        tmp_path / "mine",
        {"repo_id": "alice/tiny-pbmc", "collection": "alice/scvi-models-0123", **NO_VERIFY},
        "xet",
    )
    assert mine.returncode == 0, mine.output
    assert mine.receipt["collection"] == {"slug": "alice/scvi-models-0123", "added": True}
    assert hub.state.collections["alice/scvi-models-0123"]["items"] == [
        {"id": "alice/tiny-pbmc", "type": "model"}
    ]

    theirs = run_publish(
        hub,
        tiny_models["lung"],
        tmp_path / "theirs",
        {"repo_id": "alice/tiny-lung", "collection": "bob/his-models-4567", **NO_VERIFY},
        "xet",
    )
    assert theirs.returncode == 0, theirs.output
    assert theirs.receipt["collection"]["added"] is False
    assert "403" in theirs.receipt["collection"]["error"]
    assert hub.commit_count("alice/tiny-lung") == 2  # the commit stands


@pytest.mark.slow
def test_private_repo_is_created_private(hub, tiny, tmp_path):
    done = run_publish(
        hub, tiny, tmp_path, {"repo_id": "alice/secret", "private": True, "verify": True}, "xet"
    )
    assert done.returncode == 0, done.output
    assert hub.repo("alice/secret").private and done.receipt["private"] is True


def test_disabled_publishing_writes_the_manifest_only(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    receipt_path = tmp_path / "publish.json"

    receipt = publish.run(
        tiny.hub_dir, tiny.model_dir, section_settings("publish", {"enabled": False}), receipt_path
    )

    assert json.loads(receipt_path.read_text()) == receipt
    assert receipt["published"] is False
    assert {f["path"]: f["sha256"] for f in receipt["files"]} == {
        p.name: sha256(p.read_bytes()) for p in tiny.hub_dir.iterdir()
    }


def test_manifest_is_exactly_the_hub_layout(tiny, tmp_path):
    folder = tmp_path / "copied-hub"
    shutil.copytree(tiny.hub_dir, folder)
    (folder / "notes.txt").write_text("not for the Hub")
    assert sorted(f["path"] for f in publish.build_manifest(folder)) == sorted(HUB_FILES)
    (folder / "model.pt").unlink()
    with pytest.raises(publish.PublishError, match="lacks model.pt"):
        publish.build_manifest(folder)


def test_files_over_the_size_limit_are_refused_before_any_upload(tiny, tmp_path):
    settings = section_settings("publish", {"enabled": True, "repo_id": "alice/tiny"})
    with pytest.raises(publish.PublishError, match="training_data_url") as error:
        publish.publish(tiny.hub_dir, tiny.model_dir, settings, TOKEN, max_file_bytes=10_000)
    assert "adata.h5ad" in str(error.value) and "model.pt" in str(error.value)


@pytest.fixture
def no_stored_login(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


def test_token_is_read_from_env_or_login_and_stripped(no_stored_login, monkeypatch):
    import huggingface_hub

    assert publish.find_token() is None
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_from_login\n")
    assert publish.find_token() == "hf_from_login"
    monkeypatch.setenv("HF_TOKEN", "  hf_from_env\n")
    assert publish.find_token() == "hf_from_env"


def test_require_token_names_the_models_that_cannot_publish(no_stored_login):
    models = {
        "pbmc": section_settings("publish", {"enabled": True, "repo_id": "alice/pbmc"}),
        "lung": section_settings("publish", {"enabled": True, "repo_id": None}),
        "heart": section_settings("publish", {"enabled": False}),
    }
    with pytest.raises(ValueError) as error:
        publish.require_token_for(models)
    message = str(error.value)
    assert "no Hugging Face token" in message and "HF_TOKEN" in message
    assert "lung, pbmc" in message and "repo_id is not set for: lung" in message
    assert "heart" not in message

    publish.require_token_for({"heart": models["heart"]})  # nothing enabled: no token needed


def test_require_token_passes_with_a_token(no_stored_login, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    pbmc = section_settings("publish", {"enabled": True, "repo_id": "alice/pbmc"})
    publish.require_token_for({"pbmc": pbmc})


def test_redact_removes_the_token_in_any_form():
    assert publish.redact(f"Bearer {TOKEN} failed", TOKEN + "\n") == "Bearer <token> failed"


@pytest.mark.slow
def test_workflow_publishes_with_snakemake(hub, tmp_path, tiny_run):
    """Publishing enabled on a finished tiny run: only the publish jobs run, one commit each."""
    import yaml

    config = yaml.safe_load(TINY_CONFIG.read_text())
    names = list(config["models"])
    config.setdefault("defaults", {})
    overrides = {name: {"publish": {"enabled": True, "repo_id": f"alice/{name}"}} for name in names}
    for name, extra in overrides.items():
        config["models"][name] = {**(config["models"][name] or {}), **extra}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)  # with .snakemake/: nothing else re-runs
    env = hub_env(hub, tmp_path / "hf-home", "xet")
    command = [
        str(Path(sys.executable).with_name("snakemake")),
        "--snakefile",
        str(ROOT / "Snakefile"),
        # One job at a time: the offline Xet store (local://) is a database that only one
        # process can open; the real Hub's Xet service has no such limit.
        "--cores",
        "1",
        "--configfile",
        str(configfile),
        "--directory",
        str(workdir),
        *[f"results/{name}/publish.json" for name in names],
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = set(re.findall(r"rule (\w+):", done.stdout + done.stderr))
    # The card names the repo its users pull from, so a new repo_id re-renders the card (and
    # the hub folder that holds it); nothing upstream of the card re-runs.
    assert ran == {"card", "hub", "publish"}, ran
    # the SCANVI card's prediction recipe pulls from the repo (no <repo_id> placeholder)
    assert "alice/tiny-scanvi" in (workdir / "results/tiny-scanvi/hub/README.md").read_text()
    for name in names:
        receipt = json.loads((workdir / "results" / name / "publish.json").read_text())
        assert receipt["published"] and receipt["certification"]["verification"]["passed"]
        certification = receipt["certification"]
        assert certification["passed"] and certification["revision"] == receipt["commit"]
        assert "provenance.json" in certification["files"]
        # also in the rule's log, which a failed job keeps
        record = json.loads((workdir / "logs" / name / "certification.json").read_text())
        assert record == {"certified": True, **certification}
        assert hub.commit_count(f"alice/{name}") == 2
    # the class that maps queries was certified by mapping held-out cells onto it
    scanvi = json.loads((workdir / "results/tiny-scanvi/publish.json").read_text())
    assert scanvi["certification"]["ran"].startswith("scArches query mapping")
    assert TOKEN not in done.stdout + done.stderr
    assert_token_absent(workdir, TOKEN)
    assert_token_absent(tmp_path / "hf-home", TOKEN)

    # A failed certification fails the job: Snakemake deletes publish.json, the record stays.
    import anndata

    hub_dir = workdir / "results/tiny-scvi/hub"
    column = anndata.read_h5ad(hub_dir / "adata.h5ad", backed="r").obs.columns[0]
    provenance = json.loads((hub_dir / "provenance.json").read_text())
    provenance["input"]["subset"] = {column: ["no such value"]}
    (hub_dir / "provenance.json").write_text(json.dumps(provenance))
    one = [*command[: -len(names)], "results/tiny-scvi/publish.json"]
    failed = subprocess.run(one, env=env, capture_output=True, text=True, timeout=900)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert not (workdir / "results/tiny-scvi/publish.json").exists()
    assert "already public on the Hub" in said and "logs/tiny-scvi/certification.json" in said
    record = json.loads((workdir / "logs/tiny-scvi/certification.json").read_text())
    assert record["certified"] and not record["passed"]
    assert record["revision"] == hub.repo("alice/tiny-scvi").head.oid
    assert f"obs {column!r} holds" in record["reason"] and "already public" in record["error"]
    assert TOKEN not in said

    # Without a token, the same config fails before training starts.
    shutil.rmtree(workdir / "results")
    no_token = {k: v for k, v in env.items() if k != "HF_TOKEN"}
    early = subprocess.run(command, env=no_token, capture_output=True, text=True, timeout=300)
    assert early.returncode != 0
    assert "no Hugging Face token" in early.stdout + early.stderr
    assert not (workdir / "results").exists()


def test_tissue_check_compares_the_card_and_provenance_with_the_data():
    import pandas as pd
    from scvi_hub_workflow.publish.certify import card_tissues, tissue_check

    card = "---\nlibrary_name: scvi-tools\ntags:\n- biology\n- tissue:lung\n---\n# x\n"
    assert card_tissues(card) == ["lung"]
    lung = pd.DataFrame({"tissue": ["lung", "lung"], "donor": ["a", "b"]})
    subset = {"input": {"subset": {"tissue": ["lung"]}}}
    assert tissue_check(lung, card, subset)["passed"]
    blood = pd.DataFrame({"tissue": ["blood", "lung"]})
    failed = tissue_check(blood, card, subset)
    assert (
        not failed["passed"] and "['blood'], outside provenance.json's subset" in failed["reason"]
    )
    only_blood = tissue_check(pd.DataFrame({"tissue": ["blood"]}), card, None)
    assert (
        not only_blood["passed"]
        and "the card's tissue ['lung'] is not in the data" in (only_blood["reason"])
    )
    gone = tissue_check(pd.DataFrame({"x": [1]}), card, subset)
    assert not gone["passed"] and "'tissue', absent" in gone["reason"]
    # nothing to compare the card's tissue with: said, not failed
    unchecked = tissue_check(pd.DataFrame({"x": [1]}), card, None)
    assert unchecked["passed"] and "not checked" in unchecked["checked"][0]


@pytest.mark.slow
def test_a_push_whose_card_names_another_tissue_fails_certification(hub, tiny, tmp_path):
    card = tiny.hub_dir / "README.md"
    card.write_text(card.read_text().replace("- tissue:blood", "- tissue:lung"))
    record = tmp_path / "logs" / "certification.json"
    extra = ("--certification", str(record))
    done = run_publish(hub, tiny, tmp_path, {"repo_id": "alice/tiny"}, "xet", extra_args=extra)
    assert done.returncode == 1 and done.receipt is None
    assert "certification of alice/tiny at" in done.output
    assert "the card's tissue ['lung'] is not in the data" in done.output
    assert "already public on the Hub" in done.output
    assert f"recorded in {record}" in done.output  # the message points to the record
    assert hub.commit_count("alice/tiny") == 2  # the commit was made: the message says so
    # the failure is recorded where it survives the failed job: what ran, the revision, why
    failed = json.loads(record.read_text())
    assert failed["certified"] and not failed["passed"]
    assert failed["revision"] == hub.repo("alice/tiny").head.oid
    assert failed["ran"].startswith("scArches query mapping")
    assert failed["verification"]["passed"]  # the model itself is the one trained
    assert "the card's tissue ['lung'] is not in the data" in failed["reason"]
    assert "already public on the Hub" in failed["error"]


@pytest.mark.slow
def test_a_push_whose_weights_differ_from_the_local_model_fails_verification(hub, tiny, tmp_path):
    import torch

    # the local model the job compares with is not the one in the hub folder
    saved = torch.load(tiny.model_dir / "model.pt", weights_only=False)
    name = next(k for k, v in saved["model_state_dict"].items() if v.dtype.is_floating_point)
    saved["model_state_dict"][name] += 1.0
    torch.save(saved, tiny.model_dir / "model.pt")
    record = tmp_path / "certification.json"
    extra = ("--certification", str(record))
    done = run_publish(hub, tiny, tmp_path, {"repo_id": "alice/tiny"}, "lfs", extra_args=extra)
    assert done.returncode == 1 and done.receipt is None
    assert "verification: the pulled model differs from the local one" in done.output
    failed = json.loads(record.read_text())
    assert not failed["passed"] and failed["verification"]["max_abs_weight_difference"] >= 1.0


def test_the_certification_record_says_why_none_ran(tiny, tmp_path, monkeypatch):
    """Publishing disabled, or stopped before the commit: the record says so (no stale one)."""
    record = tmp_path / "certification.json"
    record.write_text('{"passed": true}')  # a previous run's
    settings = section_settings("publish", {"enabled": False})
    publish.run(tiny.hub_dir, tiny.model_dir, settings, tmp_path / "p.json", record)
    assert json.loads(record.read_text()) == {
        "certified": False,
        "reason": "publishing is disabled",
    }
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    settings = section_settings("publish", {"enabled": True, "repo_id": None})
    with pytest.raises(publish.PublishError, match="repo_id is not set"):
        publish.run(tiny.hub_dir, tiny.model_dir, settings, tmp_path / "p.json", record)
    failed = json.loads(record.read_text())
    assert not failed["certified"] and "publishing failed before it" in failed["reason"]
