"""``bastion model pull`` with the real ``huggingface_hub`` client against a local hub.

The hub (tests/fakes/hub.py) serves the real shipped GGUF; the real ``bastion`` command runs in
a subprocess with ``HF_ENDPOINT`` pointing at it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from bastion.errors import ModelError
from bastion.llm.embedded import shipped_model_path
from tests.fakes.hub import COMMIT, FakeHub, Repo
from tests.integration.cli.conftest import ROOT, cli_env

REPO = "acme/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in (1, 2):
        (parts / f"m-{i:05d}-of-00002.gguf").write_bytes(bytes([i]) * 300_000)
    repos = {
        REPO: Repo({FILE: shipped_model_path()}),
        "acme/gated-GGUF": Repo({FILE: shipped_model_path()}, gated_token="hf_sekrit"),
        "acme/split-GGUF": Repo({f"Tiny-Q8_0-{i:05d}-of-00002.gguf":
                                 parts / f"m-{i:05d}-of-00002.gguf" for i in (1, 2)}),
    }
    with FakeHub(repos) as h:
        yield h


def _env(home: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = cli_env(home)
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home / "hf"), HF_HUB_DISABLE_XET="1", **extra)
    return env


def run(home: Path, endpoint: str, *args: str, timeout: float = 120,
        **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args],
                          env=_env(home, endpoint, **extra), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def cli(*args: str) -> Result:
    """The bastion CLI in this process (BASTION_HOME is the test's); errors propagate."""
    from bastion.cli.main import _load_commands, app

    if not app.registered_groups:
        _load_commands()
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "(fix: " in last
    return last


@pytest.mark.real_model
def test_pull_verify_use_and_ask(bastion_home: Path, hub: FakeHub) -> None:
    out = run(bastion_home, hub.url, "model", "pull", f"{REPO}:Q4_1")
    assert out.returncode == 0, out.stderr
    assert f"pulled {NAME}" in out.stdout
    assert "MB/s" in out.stderr and "(100%)" in out.stderr  # progress: bytes, speed, ETA
    folder = bastion_home / "models" / NAME
    manifest = json.loads((folder / "manifest.json").read_text())
    want = Repo({FILE: shipped_model_path()}).sha[FILE]
    assert manifest["sha256"] == want and manifest["revision"] == COMMIT
    assert manifest["repo"] == REPO and manifest["license"] == "apache-2.0"
    assert manifest["files"][0]["size"] == shipped_model_path().stat().st_size
    assert manifest["chat_template"] is True and manifest["tool_format"] is None
    assert "chat template: yes; native tool-call format: none" in out.stdout
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "manifest.json").stat().st_mode) == 0o600
    assert not (bastion_home / "models" / ".partial" / NAME).exists()

    listed = cli("model", "list", "--json")
    assert [m["name"] for m in json.loads(listed.stdout)] == [NAME]
    shown = cli("model", "show", NAME)
    assert want in shown.stdout and "apache-2.0" in shown.stdout
    ok = cli("model", "verify", NAME)
    assert ok.exit_code == 0 and ok.stdout.startswith(f"ok   {NAME}")

    assert cli("init", "--yes").exit_code == 0
    used = cli("model", "use", NAME)
    assert used.exit_code == 0, used.output
    raw = yaml.safe_load((bastion_home / "bastion.yaml").read_text())
    assert raw["model"]["path"] == str(folder / FILE) and raw["model"]["backend"] == "embedded"
    raw["memory"] = {"enabled": False}
    (bastion_home / "bastion.yaml").write_text(yaml.safe_dump(raw))
    answer = run(bastion_home, hub.url, "ask", "--json", "Say hello in one word.", timeout=300)
    assert answer.returncode == 0, answer.stderr
    data = json.loads(answer.stdout)
    assert data["ok"] and data["answer"].strip() and data["model"] == NAME
    # provenance: the turn's model requests carry the pulled file's sha256; filter by a prefix
    found = [json.loads(line) for line in
             cli("audit", "events", "--model", want[:12], "--json").stdout.splitlines()]
    assert found and {e["kind"] for e in found} == {"model.request"}
    assert {e["detail"]["provenance"]["sha256"] for e in found} == {want}
    assert found[0]["detail"]["provenance"]["file"] == FILE
    other = cli("audit", "events", "--model", "00000000", "--json").stdout
    assert other.strip() == ""

    # a byte changed in place, size and mtime put back: the cheap load check cannot see it,
    # verify does
    path = folder / FILE
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    bad = cli("model", "verify")
    assert bad.exit_code == 1 and bad.stdout.startswith(f"FAIL {NAME}")
    # the file touched (mtime changes): loading refuses it with one line and the fix
    path.touch()
    refused = _one_line_error(run(bastion_home, hub.url, "ask", "hi"))
    assert "changed since it was verified" in refused and "bastion model verify" in refused
    # in use: rm refuses; after switching away it removes the folder
    with pytest.raises(ModelError, match="in use"):
        cli("model", "rm", NAME)
    assert cli("config", "set", "model.path", "''").exit_code == 0
    assert cli("model", "rm", NAME).exit_code == 0 and not folder.exists()


def test_interrupted_pull_resumes(bastion_home: Path, hub: FakeHub) -> None:
    size = shipped_model_path().stat().st_size
    hub.rate = size / 4  # ~4 s for the whole file
    env = _env(bastion_home, hub.url)
    proc = subprocess.Popen([sys.executable, "-m", "bastion", "model", "pull", f"{REPO}:{FILE}"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    partial = bastion_home / "models" / ".partial" / NAME
    deadline = time.monotonic() + 60
    got = 0
    while time.monotonic() < deadline:
        got = sum(p.stat().st_size for p in partial.rglob("*.part")) if partial.exists() \
            else 0
        if got >= size // 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert size // 2 <= got < size
    assert not (bastion_home / "models" / NAME / "manifest.json").exists()
    assert json.loads(run(bastion_home, hub.url, "model", "list", "--json").stdout) == []

    hub.rate = None
    hub.requests.clear()
    out = run(bastion_home, hub.url, "model", "pull", f"{REPO}:{FILE}")
    assert out.returncode == 0, out.stderr
    ranges = [r for m, p, r in hub.requests if m == "GET" and "/resolve/" in p]
    assert ranges and ranges[0] is not None
    resumed_at = int(ranges[0].removeprefix("bytes=").split("-")[0])
    assert resumed_at >= size // 2  # it asked only for the rest
    assert run(bastion_home, hub.url, "model", "verify", NAME).returncode == 0


def test_offline_and_gated(bastion_home: Path, hub: FakeHub) -> None:
    offline = _one_line_error(run(bastion_home, "http://127.0.0.1:9", "model", "pull",
                                  f"{REPO}:Q4_1"))
    assert "http://127.0.0.1:9" in offline and "HF_ENDPOINT" in offline
    gated = _one_line_error(run(bastion_home, hub.url, "model", "pull", "acme/gated-GGUF:Q4_1"))
    assert "gated" in gated and "HF_TOKEN" in gated


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process runs with HF_HUB_OFFLINE=1 (tests/conftest.py); these calls go online."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_in_process_errors_split_and_token(bastion_home: Path, hub: FakeHub, online: None
                                           ) -> None:
    from bastion.errors import ModelError
    from bastion.llm import store
    from bastion.llm.pull import pull

    def error(spec: str, **kw: str) -> str:
        with pytest.raises(ModelError) as exc:
            pull(spec, endpoint=hub.url, **kw)
        assert exc.value.fix
        return exc.value.user_text()

    missing = error(f"{REPO}:Q8_0")
    assert "no Q8_0 GGUF file" in missing and "REPO:Q4_1" in missing
    assert "no repo" in error("acme/nope")
    assert "not a Hugging Face repo" in error("nope")
    with pytest.raises(ModelError, match="no installed model"):
        store.read_manifest("nope")

    m = pull("acme/gated-GGUF:Q4_1", endpoint=hub.url, token="hf_sekrit")
    assert m.repo == "acme/gated-GGUF" and m.revision == COMMIT

    split = pull("acme/split-GGUF:Q8_0", endpoint=hub.url)
    assert [f.name for f in split.files] == [
        "Tiny-Q8_0-00001-of-00002.gguf", "Tiny-Q8_0-00002-of-00002.gguf"]
    assert split.size == 600_000 and split.name == "Tiny-Q8_0"
    assert store.verify(split) == []
    assert (bastion_home / "models" / "Tiny-Q8_0" / "Tiny-Q8_0-00002-of-00002.gguf").is_file()

    hub.corrupt = True
    (bastion_home / "models" / "Tiny-Q8_0").rename(bastion_home / "moved")
    bad = error("acme/split-GGUF:Q8_0")
    assert "failed verification" in bad and "nothing was installed" in bad
    assert not (bastion_home / "models" / "Tiny-Q8_0").exists()



def test_dropped_connection_and_ignored_range(bastion_home: Path, hub: FakeHub, online: None
                                              ) -> None:
    """A connection cut mid-body is resumed in the same run with a Range request; a server that
    answers a Range request with the whole file (200) restarts the file, and both verify."""
    from bastion.llm import store
    from bastion.llm.pull import pull

    size = shipped_model_path().stat().st_size
    hub.cut_after = size // 3
    m = pull(f"{REPO}:{FILE}", endpoint=hub.url)
    gets = [r for meth, p, r in hub.requests if meth == "GET" and "/resolve/" in p]
    assert gets == [None, f"bytes={size // 3}-"]
    assert store.verify(m) == []

    shutil.rmtree(store.model_dir(NAME))
    partial = bastion_home / "models" / ".partial" / NAME
    partial.mkdir(parents=True)
    (partial / (FILE + ".part")).write_bytes(shipped_model_path().read_bytes()[:1000])
    hub.ignore_range = True
    hub.requests.clear()
    m = pull(f"{REPO}:{FILE}", endpoint=hub.url)
    assert [r for meth, p, r in hub.requests if meth == "GET" and "/resolve/" in p] == [
        "bytes=1000-"]
    assert store.verify(m) == [] and not partial.exists()


def test_import_copy_and_link(bastion_home: Path, tmp_path: Path) -> None:
    src = tmp_path / "My Model.Q4_1.gguf"
    src.write_bytes(shipped_model_path().read_bytes())
    out = cli("model", "import", str(src), "--json")
    m = json.loads(out.stdout)
    assert m["name"] == "My-Model.Q4_1" and m["source"] == "import"
    assert m["sha256"] == Repo({FILE: shipped_model_path()}).sha[FILE]
    copied = bastion_home / "models" / "My-Model.Q4_1" / src.name
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600 and copied.stat().st_ino != \
        src.stat().st_ino
    linked = json.loads(cli("model", "import", str(src), "--name", "linked", "--link",
                            "--json").stdout)
    assert (bastion_home / "models" / "linked" / src.name).stat().st_ino == src.stat().st_ino
    assert linked["sha256"] == m["sha256"]
    with pytest.raises(ModelError, match="already installed"):
        cli("model", "import", str(src), "--name", "linked")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a GGUF model file"):
        cli("model", "import", str(junk))
    assert not (bastion_home / "models" / "junk").exists()


def test_api_pull_streams_progress_and_lists(served_home: Path, hub: FakeHub) -> None:
    """A real `bastion serve`: POST /v1/models/pull streams SSE; GET /v1/models/pulled lists."""
    import socket

    import httpx

    from tests.integration.cli.conftest import stop, wait_healthy

    cfg = yaml.safe_load((served_home / "bastion.yaml").read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg["api"]["port"] = port
    (served_home / "bastion.yaml").write_text(yaml.safe_dump(cfg))
    auth = {"Authorization": f"Bearer {cfg['api']['token']}"}
    from bastion.security.keystore import open_store

    keys = open_store(served_home)  # scoped keys (#19): pull/list/delete need models:admin
    try:
        keys.add_user("ops")
        ops = {"Authorization": f"Bearer {keys.create_key('ops', scopes=['models:admin'])[0]}"}
        chat_only = {"Authorization": f"Bearer {keys.create_key('ops', scopes=['chat'])[0]}"}
    finally:
        keys.close()
    log = served_home / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve"],
                                env=_env(served_home, hub.url), stdout=out,
                                stderr=subprocess.STDOUT, cwd=served_home)
    try:
        wait_healthy(proc, port, log, timeout=120)
        base = f"http://127.0.0.1:{port}"
        events: list[tuple[str, dict[str, object]]] = []
        with httpx.stream("POST", f"{base}/v1/models/pull", json={"model": f"{REPO}:Q4_1"},
                          headers=auth, timeout=120) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            name = ""
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
        assert events[-1][0] == "done" and events[-1][1]["name"] == NAME
        from tests.sse_contract import check_event

        doc = httpx.get(f"{base}/openapi.json", headers=auth).json()
        for name, data in events:  # as documented, no field undocumented
            check_event(doc, "post", "/v1/models/pull", name, data)
        progress = [d for n, d in events if n == "progress"]
        assert progress and progress[-1]["done"] == progress[-1]["total"]
        assert {"rate", "eta_s", "file"} <= set(progress[0])
        listed = httpx.get(f"{base}/v1/models/pulled", headers=auth).json()["data"]
        assert [(m["id"], m["owned_by"], m["in_use"]) for m in listed] == [
            (NAME, "bastion:pulled", False)]
        assert listed[0]["sha256"] == Repo({FILE: shipped_model_path()}).sha[FILE]
        # provenance of a remote backend: the server URL and model id, filterable over the API
        chat = httpx.post(f"{base}/v1/chat/completions", headers=auth, timeout=60, json={
            "model": "bastion-agent", "messages": [{"role": "user", "content": "thanks"}]})
        assert chat.status_code == 200, chat.text
        url = cfg["model"]["base_url"]
        recs = httpx.get(f"{base}/v1/audit/events", headers=auth,
                         params={"model": url}).json()["events"]
        assert recs and all(r["detail"]["provenance"] == {
            "backend": "openai", "base_url": url, "model": "fake"} for r in recs)
        assert httpx.get(f"{base}/v1/audit/events", headers=auth,
                         params={"model": "http://elsewhere/v1"}).json()["events"] == []
        openai = httpx.get(f"{base}/v1/models", headers=auth).json()  # shape unchanged
        assert openai["object"] == "list" and NAME not in [m["id"] for m in openai["data"]]
        with httpx.stream("POST", f"{base}/v1/models/pull", json={"model": "acme/nope"},
                          headers=auth, timeout=60) as resp:
            body = resp.read().decode()
        assert body.startswith("event: error") and "no repo acme/nope" in body and '"fix"' in body
        assert httpx.post(f"{base}/v1/models/pull", json={"model": "x"}).status_code == 401
        # models:admin: a chat-only key can neither pull, list nor delete; a models:admin one can
        for method, path in (("POST", "/v1/models/pull"), ("GET", "/v1/models/pulled"),
                             ("DELETE", f"/v1/models/pulled/{NAME}")):
            r = httpx.request(method, f"{base}{path}", headers=chat_only, json={"model": "x"}
                              if method == "POST" else None)
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        assert httpx.delete(f"{base}/v1/models/pulled/nope", headers=ops).status_code == 404
        gone = httpx.delete(f"{base}/v1/models/pulled/{NAME}", headers=ops)
        assert gone.status_code == 200 and gone.json()["deleted"] is True, gone.text
        assert httpx.get(f"{base}/v1/models/pulled", headers=ops).json()["data"] == []
        assert not (served_home / "models" / NAME).exists()
    finally:
        stop(proc, log)


def test_free_disk_checked_before_the_first_byte(bastion_home: Path, hub: FakeHub, online: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit test of the check (the free space is faked): refused before any download."""
    import shutil as sh

    from bastion.llm import pull as pull_mod

    monkeypatch.setattr(pull_mod.shutil, "disk_usage",
                        lambda p: sh._ntuple_diskusage(10 << 30, 10 << 30, 50 << 20))
    with pytest.raises(ModelError, match="not enough disk space") as exc:
        pull_mod.pull(f"{REPO}:Q4_1", endpoint=hub.url)
    assert "BASTION_HOME" in (exc.value.fix or "")
    assert not [p for m, p, _ in hub.requests if "/resolve/" in p]
    assert not (bastion_home / "models" / NAME).exists()


def test_disk_full_during_a_pull(bastion_home: Path, hub: FakeHub) -> None:
    """#17: a tmpfs (made by this test, in its own mount namespace) fills up mid-download:
    one clear line, the partial download removed, the model pulled before still verifies."""
    import shutil as sh

    if sh.which("unshare") is None or subprocess.run(
            ["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a mount namespace here (unshare -Urm)")
    hub.rate = 20e6  # ~5 s for the 98 MB model: the disk fills while it downloads
    models = bastion_home / "models"
    models.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    script = f"""
set -u
mount -t tmpfs -o size=200m tmpfs "{models}" || exit 90
{py} -m bastion model pull acme/split-GGUF:Q8_0 >/dev/null 2>&1 || echo "first pull failed"
{py} -m bastion model pull {REPO}:Q4_1 >/dev/null 2>"{bastion_home}/pull.err" &
pid=$!
while ! ls "{models}"/.partial/*/*.part >/dev/null 2>&1; do sleep 0.05; done
dd if=/dev/zero of="{models}/filler" bs=1M >/dev/null 2>&1
wait $pid; echo "pull rc=$?"
rm -f "{models}/filler"
find "{models}" -mindepth 1 | sed "s|{models}/||" | sort
{py} -m bastion model verify Tiny-Q8_0 >/dev/null; echo "verify rc=$?"
"""
    out = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True,
                         text=True, timeout=180, env=_env(bastion_home, hub.url), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "first pull failed" not in lines and "pull rc=1" in lines, out.stdout
    err = (bastion_home / "pull.err").read_text()
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("error: the disk filled up"), err
    assert "partial download" in last and "(fix: free " in last
    listed = lines[lines.index("pull rc=1") + 1: -1]
    assert not [p for p in listed if p.endswith(".part") or NAME in p], listed  # none half-made
    assert "Tiny-Q8_0/manifest.json" in listed and lines[-1] == "verify rc=0"  # nothing lost


def test_recommend_then_init_pull(bastion_home: Path, hub: FakeHub) -> None:
    """#17: `model recommend` names a concrete repo + quant with reasons; `init --pull` fetches
    exactly that (verified) and makes it the model that answers, with the recommended context."""
    from bastion.hardware import detect, recommend

    rec = recommend(detect())
    gguf = f"{rec.model}-{rec.quant}.gguf"  # the hub serves the shipped file under that name
    hub.repos[rec.repo] = Repo({gguf: shipped_model_path()})
    shown = run(bastion_home, hub.url, "model", "recommend", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["pull"] == f"{rec.repo}:{rec.quant}" and data["context"] == rec.context
    assert any("tool calls" in r for r in data["reasons"])
    text = run(bastion_home, hub.url, "model", "recommend").stdout
    assert f"bastion model pull {rec.repo}:{rec.quant}" in text and "why:" in text

    done = run(bastion_home, hub.url, "init", "--yes", "--pull")
    assert done.returncode == 0, done.stderr
    # the template is checked on pull: the shipped file stands in for the recommended model,
    # and its ChatML template defines no tool-call format, which the pull says
    assert (f"defines tool-call format none, the recommendation expects {rec.tool_format}"
            in done.stderr), done.stderr
    name = gguf[: -len(".gguf")]
    manifest = json.loads((bastion_home / "models" / name / "manifest.json").read_text())
    assert manifest["repo"] == rec.repo and manifest["sha256"] == hub.repos[rec.repo].sha[gguf]
    raw = yaml.safe_load((bastion_home / "bastion.yaml").read_text())
    assert raw["model"]["path"] == str(bastion_home / "models" / name / gguf)
    assert raw["model"]["backend"] == "embedded" and raw["model"]["n_ctx"] == rec.context
    assert raw["api"]["token"]  # the rest of init happened too
    again = run(bastion_home, hub.url, "init", "--pull")  # a kept config: pulled already
    assert again.returncode == 0 and "kept" in again.stderr, again.stderr


def _ollama_store(root: Path, weights: bytes, *, licence: str = "MIT License\n...") -> str:
    """An Ollama store laid out as Ollama writes it: blobs/sha256-<hex> + OCI-style manifests."""
    import hashlib

    blobs = root / "blobs"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> str:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{hexd}").write_bytes(data)
        return f"sha256:{hexd}"

    layers = [
        {"mediaType": "application/vnd.ollama.image.model", "digest": blob(weights),
         "size": len(weights)},
        {"mediaType": "application/vnd.ollama.image.template",
         "digest": blob(b"{{ .Prompt }}"), "size": 13},
        {"mediaType": "application/vnd.ollama.image.license",
         "digest": blob(licence.encode()), "size": len(licence)},
    ]
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                           "digest": blob(b"{}"), "size": 2}, "layers": layers}
    folder = root / "manifests" / "registry.ollama.ai" / "library" / "tinyllm"
    folder.mkdir(parents=True)
    (folder / "1b").write_text(json.dumps(manifest))
    return str(layers[0]["digest"]).split(":")[1]


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                       stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*"))}


def test_import_from_an_ollama_store(bastion_home: Path, tmp_path: Path) -> None:
    """#17: a model Ollama already pulled is imported read-only, verified by its digest."""
    root = tmp_path / "ollama" / "models"
    weights = b"GGUF" + (3).to_bytes(4, "little") + os.urandom(3 << 20)
    digest = _ollama_store(root, weights)
    before = _tree(root)
    m = json.loads(cli("model", "import", "--ollama", "tinyllm:1b", "--ollama-store", str(root),
                       "--json").stdout)
    assert m["name"] == "tinyllm-1b" and m["source"] == "ollama"
    assert m["repo"] == "ollama:tinyllm:1b" and m["sha256"] == digest
    assert m["license"] == "MIT License"
    installed = bastion_home / "models" / "tinyllm-1b" / "tinyllm-1b.gguf"
    assert installed.read_bytes() == weights and stat.S_IMODE(installed.stat().st_mode) == 0o600
    assert cli("model", "verify", "tinyllm-1b").exit_code == 0
    assert _tree(root) == before  # Ollama's store is read, never changed

    linked = json.loads(cli("model", "import", "--ollama", "tinyllm:1b", "--ollama-store",
                            str(root), "--name", "t2", "--link", "--json").stdout)
    assert linked["sha256"] == digest and _tree(root) == before
    with pytest.raises(ModelError, match="Ollama has no model tinyllm:latest"):
        cli("model", "import", "--ollama", "tinyllm", "--ollama-store", str(root))
    with pytest.raises(ModelError, match="no Ollama model store"):
        cli("model", "import", "--ollama", "x", "--ollama-store", str(tmp_path / "nope"))

    blob = root / "blobs" / f"sha256-{digest}"  # one flipped byte in Ollama's blob
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its digest") as exc:
        cli("model", "import", "--ollama", "tinyllm:1b", "--ollama-store", str(root),
            "--name", "t3")
    assert "nothing was installed" in str(exc.value) and "ollama pull" in (exc.value.fix or "")
    assert not (bastion_home / "models" / "t3").exists()
