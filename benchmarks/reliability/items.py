"""The reliability checklist's items, and why the ones no campaign or test measures are not."""

# The checklist: id → short name (the full method and targets are in the project's reliability checklist).
ITEMS = {
    "A1": "kill during save", "A2": "kill -9 at a random step", "A3": "truncation and bit-flip fuzz",
    "A4": "disk full", "A5": "retention under kills", "A6": "two writers, one directory",
    "A7": "format compatibility", "A8": "resume discovery ignores junk",
    "B1": "same seed twice", "B2": "resume at every boundary", "B3": "kill inside gradient accumulation",
    "B4": "loader state", "B5": "RNG streams", "B6": "schedule state", "B7": "config guard",
    "B8": "golden loss curve",
    "C1": "malicious pickle", "C2": "safetensors fuzz", "C3": "torch floor", "C4": "HF import policy",
    "C5": "template sandbox", "C6": "static bans", "C7": "artifact integrity between stages",
    "D1": "NaN loss, policy stop", "D2": "NaN loss, policy skip", "D3": "inf in one gradient",
    "D4": "spike detector", "D5": "consecutive failures", "D6": "fully masked attention rows",
    "D7": "large logits", "D8": "fp16 scaler",
    "E1": "invalid UTF-8 fuzz", "E2": "odd files", "E3": "huge line", "E4": "corrupt shard",
    "E5": "id dtype guard", "E6": "determinism of cleaning", "E7": "tokenizer round trip",
    "E8": "streaming detokenizer", "E9": "schema errors in task data", "E10": "CMRC answer spans",
    "F1": "bind default", "F2": "public bind needs a key", "F3": "auth on every route", "F4": "body limit",
    "F5": "token limits", "F6": "parameter fuzz", "F7": "backpressure", "F8": "timeouts",
    "F9": "client disconnect", "F10": "stream validity", "F11": "no path tricks", "F12": "soak",
    "F13": "log hygiene",
    "G1": "elastic restart", "G2": "single committer", "G3": "NaN on one rank", "G4": "preemption signal",
    "G5": "hung peer",
    "H1": "import parity", "H2": "export parity", "H3": "tokenizer export", "H4": "state-dict completeness",
    "I1": "attention vs torch", "I2": "causality", "I3": "KV cache", "I4": "positional encodings",
    "I5": "optimizer", "I6": "word2vec gradient", "I7": "overfit one batch",
}

# Items no campaign or test here measures, and why.
NOT_MEASURED = {
    "D8": "not measured: needs a CUDA device (fp16 with a GradScaler is CUDA-only); this machine has no GPU",
}
