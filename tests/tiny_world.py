"""What the fault and Slurm tests build their tiny worlds from: the moin binary under test, a vocabulary of
three topics (a corpus that clusters), and a tiny base model's config."""
import os

ROOT = os.environ.get("MOIN_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MOIN = os.environ.get("MOIN_BIN", os.path.join(ROOT, "build", "bin", "moin"))

TOPICS = {
    "sea": "boat wave sail harbour tide anchor gull salt deck mast storm reef coast fish net shore".split(),
    "code": "function return loop array pointer compile debug stack heap thread mutex socket parse byte".split(),
    "food": "bread butter onion garlic simmer oven flour sugar pepper roast soup salad cheese knife".split(),
}

BASE_MODEL = {"vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64,
              "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}
