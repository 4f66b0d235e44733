// Training a tokenizer on a corpus in any form the corpus reader accepts (JSONL, .gz, .zst): the texts
// are written one line per text line to a temporary file beside the model, which the SentencePiece
// trainer reads, then removed.
#pragma once
#include "moin/data/corpus.h"
#include "moin/data/tokenizer.h"

namespace moin {

// opts.input: files; those whose name says JSONL (is_jsonl_path) are read with the corpus reader using
// `corpus`'s fields and bad-input handling (corpus.inputs is ignored); the others go to the trainer as
// they are. Returns the ingest report of the JSONL inputs (empty when there were none).
IngestReport train_tokenizer_on_corpus(const TokenizerTrainOptions& opts, const CorpusOptions& corpus);

}  // namespace moin
