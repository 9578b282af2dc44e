"""Secret backends: sops+age files (interoperable with sops), env, references, the stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bastion.errors import SecretError
from bastion.messages import ToolCall
from bastion.security.gateway import Environment, Gateway
from bastion.security.redact import Redactor
from bastion.security.secrets import SecretResolver, SecretsStage, parse_ref
from bastion.security.secrets.env import EnvBackend
from bastion.security.secrets.sops import SopsBackend
from bastion.tools.base import ToolContext, tool
from bastion.tools.registry import ToolRegistry

FIX = Path(__file__).parent / "secrets_fixtures"
# The npm `sops-age` decoder (an independent sops implementation), installed by
# scripts/test-assets.sh into .venv/sops-node (or BASTION_TEST_NPM).
NPM_DIR = Path(os.environ.get("BASTION_TEST_NPM",
                              Path(__file__).parents[3] / ".venv" / "sops-node"))
DECODER = """import { decryptSops } from "sops-age";
const [,, path, key] = process.argv;
console.log(JSON.stringify(await decryptSops({ path, secretKey: key })));
"""


def test_reads_a_file_made_by_sops_and_checks_its_mac(tmp_path: Path) -> None:
    backend = SopsBackend(FIX / "sops-made.enc.yaml", FIX / "key.txt")
    assert backend.read_all() == {
        "secret": "this is a secret", "string": "string", "int": 7, "float": 3.14,
        "boolean": True, "complex": {"value": "this is a secret", "array": ["one", "two", "three"]},
    }
    assert backend.get("complex") == {"value": "this is a secret"}
    assert backend.get("int") == {"value": "7"}
    # one changed byte in the MAC's ciphertext -> refused
    text = (FIX / "sops-made.enc.yaml").read_text().replace("mac: ENC[AES256_GCM,data:VkH",
                                                           "mac: ENC[AES256_GCM,data:VkG")
    bad = tmp_path / "bad.enc.yaml"
    bad.write_text(text)
    with pytest.raises(SecretError):
        SopsBackend(bad, FIX / "key.txt").read_all()


def test_removed_value_breaks_the_mac(tmp_path: Path) -> None:
    doc = yaml.safe_load((FIX / "sops-made.enc.yaml").read_text())
    del doc["string"]
    p = tmp_path / "cut.enc.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(SecretError, match="MAC"):
        SopsBackend(p, FIX / "key.txt").read_all()


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_set_get_list_rm_roundtrip_without_plaintext_on_disk(tmp_path: Path, suffix: str) -> None:
    b = SopsBackend(tmp_path / f"s.enc{suffix}", tmp_path / "age.key")
    b.put("db", {"user": "app", "password": "pl41ntext-Pw!"})
    b.put("github/token", {"value": "ghp_example"})
    assert b.get("db") == {"user": "app", "password": "pl41ntext-Pw!"}
    assert b.get("github/token") == {"value": "ghp_example"}
    assert b.list() == ["db/password", "db/user", "github/token"]
    on_disk = (tmp_path / f"s.enc{suffix}").read_text()
    assert "pl41ntext" not in on_disk and "ghp_example" not in on_disk
    assert "ENC[AES256_GCM" in on_disk
    assert (tmp_path / f"s.enc{suffix}").stat().st_mode & 0o077 == 0
    b.delete("db")
    assert b.list() == ["github/token"]
    with pytest.raises(SecretError):
        b.get("db")


@pytest.mark.skipif(not (shutil.which("node") and (NPM_DIR / "node_modules/sops-age").exists()),
                    reason="npm sops-age decoder not installed (scripts/test-assets.sh)")
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_an_independent_sops_decoder_reads_bastions_files(tmp_path: Path, suffix: str) -> None:
    key = (FIX / "key.txt").read_text().split()[-1]
    b = SopsBackend(tmp_path / f"s.enc{suffix}", FIX / "key.txt")
    b.put("app", {"token": "tok-123456", "port": "8080"})
    b.put("flag_unencrypted", {"value": "visible"})
    (tmp_path / "node_modules").symlink_to(NPM_DIR / "node_modules")
    (tmp_path / "decrypt.mjs").write_text(DECODER)
    out = subprocess.run(["node", str(tmp_path / "decrypt.mjs"), str(tmp_path / f"s.enc{suffix}"),
                          key],
                         capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == {"app": {"token": "tok-123456", "port": "8080"},
                                      "flag_unencrypted": "visible"}


def test_env_backend_and_refs() -> None:
    env = EnvBackend(environ={"BASTION_SECRET_DB_PASS": "pw-from-env"})
    assert env.get("db_pass") == {"value": "pw-from-env"}
    assert env.list() == ["db_pass"]
    with pytest.raises(SecretError) as err:
        env.get("missing")
    assert "export BASTION_SECRET_MISSING" in err.value.user_text()
    ref = parse_ref("secret://vault/kv/app#token")
    assert (ref.backend, ref.path, ref.key) == ("vault", "kv/app", "token")
    assert parse_ref("secret://env/x").key == "value"
    with pytest.raises(SecretError):
        parse_ref("vault/kv/app")


@tool()
async def show_env(ctx: ToolContext) -> str:
    """Report which secrets the tool was handed."""
    return "got " + ",".join(f"{k}={v}" for k, v in sorted(ctx.secrets.items()))


async def test_stage_injects_declared_secrets_and_output_is_scanned(tmp_path: Path) -> None:
    from bastion.security.model_guard import OutputScanStage

    red = Redactor()
    resolver = SecretResolver({"env": EnvBackend(environ={"BASTION_SECRET_API": "v4lue-Canary-9"})},
                              red)
    reg = ToolRegistry()
    reg.add(show_env)
    stage = SecretsStage(resolver, {"show_env": {"API_TOKEN": "secret://env/api"}})
    gw = Gateway(reg, Environment(workspace=tmp_path), [stage, OutputScanStage(red)])
    res = await gw.execute(ToolCall("show_env", {}))
    assert res.ok and res.text == "got API_TOKEN=[REDACTED]"
    bad = SecretsStage(resolver, {"show_env": {"X": "secret://env/nope"}})
    gw = Gateway(reg, Environment(workspace=tmp_path), [bad])
    res = await gw.execute(ToolCall("show_env", {}))
    assert res.decision == "denied" and "BASTION_SECRET_NOPE" in res.text
    assert "v4lue" not in res.text
