"""Zero-knowledge proofs with EZKL on one tiny model (skipped when ezkl is not installed)."""
import json

import pytest
import torch
from torch import nn

pytest.importorskip("ezkl")
pytestmark = pytest.mark.slow  # a circuit, a test-grade SRS and three proofs: about a minute on 2 cores

from backmark.core.keygen import keygen
from backmark.crypto import OwnerKey
from backmark.errors import TooLargeForZK
from backmark.io.documents import dumps_json
from backmark.protocols.public import check_public_claim, public_claim
from backmark.protocols.zk import build_circuit, poseidon_commitment, poseidon_commitments, prove_elements, verify_proofs
from backmark.targets import describe

SHAPE = (1, 6, 6)


class Tiny(nn.Module):
    """36 -> 3 linear classifier (111 parameters) taking images in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(36, 3)
        self.input_shape, self.num_classes = SHAPE, 3

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("zk")
    owner = OwnerKey.generate()
    mk, vk = keygen(input_shape=SHAPE, num_classes=3, owner_key=owner, set_size=8, created="2026-01-01T00:00:00Z")
    torch.manual_seed(0)
    model = Tiny()
    x = torch.from_numpy(mk.images).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor(mk.labels)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):  # mark it: fit the 8 triggers
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).argmax(1) == y).all()
    claim = public_claim(mk, vk, owner, target=0.5, zk_commitments=poseidon_commitments(mk.images), allow_weak_alpha=True,
                         model_info=describe(model))  # 8 elements: a toy target, never ownership evidence
    unopened = [i for i in range(8) if i not in claim["body"]["challenge"]["opened"]]
    manifest = prove_elements(model, mk, vk, unopened[:2], d / "proofs", circuit_folder=d / "circuit")
    return d, mk, vk, model, claim, manifest, unopened


def test_prove_and_verify_one_committed_image(setup):
    d, mk, vk, model, claim, manifest, unopened = setup
    assert [p["index"] for p in manifest["proofs"]] == unopened[:2] and not manifest["skipped"]
    assert "TEST-GRADE" in manifest["srs"]
    first = manifest["proofs"][0]
    assert first["poseidon"] == poseidon_commitment(mk.images[first["index"]])  # the public instance
    files = {p.name for p in (d / "proofs").iterdir()}
    assert "pk.key" not in files and not any("input" in f or "witness" in f for f in files)  # nothing secret shipped
    res = verify_proofs(d / "proofs", vk=vk, model=model)
    assert [r["index"] for r in res.valid] == unopened[:2] and not res.rejected and res.model_checked
    # the claim counts the proofs against its unopened threshold
    chk = check_public_claim(claim, vk, zk_proofs=[d / "proofs"])
    assert chk.valid and chk.zk_valid == 2 and 2 >= chk.parameters.unopened_threshold
    assert not chk.verified  # the proofs reach the threshold, but a target of 0.5 is far above the 2^-64 floor


def test_tampered_proof_is_rejected(setup, tmp_path):
    d, _mk, _vk, _model, _claim, _manifest, _unopened = setup
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(d / "proofs", bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["proofs"][0]["label"] = (m["proofs"][0]["label"] + 1) % 3  # claim another label
    (bad / "manifest.json").write_text(json.dumps(m))
    res = verify_proofs(bad)
    assert [r["index"] for r in res.rejected] == [m["proofs"][0]["index"]] and "shows class" in res.rejected[0]["reason"]
    p = bad / m["proofs"][1]["file"]
    proof = json.loads(p.read_text())
    proof["instances"][0][1] = proof["instances"][0][0]  # a forged public output
    p.write_text(json.dumps(proof))
    res = verify_proofs(bad)
    assert len(res.rejected) == 2 and not res.valid
    # another model's circuit: its verifying key differs
    other = Tiny()
    from backmark.errors import TamperedRecord

    with pytest.raises(TamperedRecord, match="not the circuit of this model"):
        verify_proofs(d / "proofs", model=other)


def test_too_large_for_zk_here(setup):
    d, mk, _vk, *_ = setup
    big = nn.Sequential(nn.Flatten(), nn.Linear(36, 1000), nn.ReLU(), nn.Linear(1000, 3))
    with pytest.raises(TooLargeForZK, match="too large for ZK here"):
        build_circuit(big, SHAPE, mk.images, folder=d / "big")


def test_cli_zk_verify_and_check_claim(setup, tmp_path):
    from click.testing import CliRunner

    from backmark.cli import main

    d, _mk, vk, _model, claim, _manifest, _unopened = setup
    vk.save(tmp_path / "vk.json")
    (tmp_path / "claim.json").write_bytes(dumps_json(claim))  # as backmark writes it: claim files are canonical
    r = CliRunner()
    res = r.invoke(main, ["zk-verify", str(d / "proofs"), "--verification-key", str(tmp_path / "vk.json")])
    assert res.exit_code == 0 and "2 proofs valid, 0 rejected" in res.stdout and "TEST-GRADE" in res.stdout
    res = r.invoke(main, ["check-claim", str(tmp_path / "claim.json"), "--verification-key", str(tmp_path / "vk.json"),
                          "--zk", str(d / "proofs"), "--json"])
    assert json.loads(res.stdout)["zk_valid"] == 2
