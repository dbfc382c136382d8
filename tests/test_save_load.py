"""Whole models saved with torch.save load with torch.load's default (weights_only=True) in a fresh
process after `import rnnlab`, and compute what they computed before."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SAVE = textwrap.dedent("""
    import sys, torch, rnnlab
    torch.manual_seed(0)
    models = {
        "lstm": rnnlab.LSTM(3, 4, num_layers=2, bidirectional=True, peepholes=True),
        "gru": rnnlab.GRU(3, 4, reset="after", layer_norm=True, zoneout=0.1, batch_first=True),
        "rnn": rnnlab.RNN(3, 4, nonlinearity="relu", engine="reference"),
        "mingru": rnnlab.MinGRU(3, 4), "minlstm": rnnlab.MinLSTM(3, 4),
        "nn_lstm": rnnlab.nn.LSTM(3, 4, num_layers=2), "nn_lstm_proj": rnnlab.nn.LSTM(3, 4, proj_size=2),
        "nn_gru": rnnlab.nn.GRU(3, 4, bidirectional=True), "nn_rnn": rnnlab.nn.RNN(3, 4).double(),
    }
    models["nn_gru"].engine = "reference"
    cells = {"lstm_cell": rnnlab.LSTMCell(3, 4, coupled=True), "gru_cell": rnnlab.GRUCell(3, 4),
             "rnn_cell": rnnlab.RNNCell(3, 4), "mingru_cell": rnnlab.MinGRUCell(3, 4),
             "minlstm_cell": rnnlab.MinLSTMCell(3, 4), "nn_lstm_cell": rnnlab.nn.LSTMCell(3, 4),
             "nn_gru_cell": rnnlab.nn.GRUCell(3, 4), "nn_rnn_cell": rnnlab.nn.RNNCell(3, 4)}
    for m in (*models.values(), *cells.values()):
        m.eval()  # zoneout off: the same function in both processes
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        outputs = {k: m(x.double() if k == "nn_rnn" else x)[0] for k, m in models.items()}
        outputs.update({k: c(x[0]) for k, c in cells.items()})
    torch.save({"modules": {**models, **cells}, "x": x, "outputs": outputs}, sys.argv[1])
""")

LOAD = textwrap.dedent("""
    import sys, torch, rnnlab
    saved = torch.load(sys.argv[1])  # torch's default: weights_only=True
    x, outputs = saved["x"], saved["outputs"]
    leaves = lambda r: [r] if isinstance(r, torch.Tensor) else [t for part in r for t in leaves(part)]
    with torch.no_grad():
        for name, module in saved["modules"].items():
            got = module(x[0]) if name.endswith("cell") else module(x.double() if name == "nn_rnn" else x)[0]
            got, want = leaves(got), leaves(outputs[name])
            assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want)), name
    assert saved["modules"]["nn_gru"].engine == "reference" and isinstance(saved["modules"]["nn_lstm"], torch.nn.LSTM)
    print("loaded", len(saved["modules"]))
""")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_a_saved_model_loads_with_weights_only_in_a_fresh_process(tmp_path):
    path = str(tmp_path / "models.pt")
    saved = _run(SAVE, path)
    assert saved.returncode == 0, saved.stderr
    loaded = _run(LOAD, path)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "loaded 17"


def test_without_the_registration_torch_refuses_the_file(tmp_path):
    """The test above can fail: torch's weights-only unpickler refuses rnnlab's classes unless registered."""
    path = str(tmp_path / "models.pt")
    assert _run(SAVE, path).returncode == 0
    code = ("import sys, torch, rnnlab\n"
            "torch.serialization.clear_safe_globals()\n"
            "torch.load(sys.argv[1])\n")
    refused = _run(code, path)
    assert refused.returncode != 0 and "Unsupported global" in refused.stderr
