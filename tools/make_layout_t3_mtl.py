"""Write chatterbox/model/layouts/checkpoint-t3-mtl.txt: every tensor of t3_mtl23ls_v2.safetensors (name, shape,
dtype) as the reference's T3(T3Config.multilingual()) names them. Run with the reference environment's Python:

    /tmp/chatterbox-ref-venv/bin/python tools/make_layout_t3_mtl.py
"""
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config

    with torch.device("meta"):
        t3 = T3(T3Config.multilingual())
    lines = [f"{name}\t{tuple(t.shape)}\t{t.dtype}" for name, t in t3.state_dict().items()]
    out = ROOT / "chatterbox" / "model" / "layouts" / "checkpoint-t3-mtl.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"{out}: {len(lines)} tensors")


if __name__ == "__main__":
    main()
