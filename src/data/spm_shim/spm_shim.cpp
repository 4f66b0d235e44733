// Built into libmoin_spm.so; see spm_shim.h for why this lives in its own shared library.
#include "data/spm_shim/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

void set_err(char* err, size_t len, const std::string& msg) {
  if (!err || len == 0) return;
  std::strncpy(err, msg.c_str(), len - 1);
  err[len - 1] = '\0';
}

sentencepiece::SentencePieceProcessor* sp(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h); }

void* spm_load(const char* path, char* err, size_t err_len) {
  auto* p = new sentencepiece::SentencePieceProcessor();
  auto status = p->Load(path);
  if (!status.ok()) {
    set_err(err, err_len, status.ToString());
    delete p;
    return nullptr;
  }
  return p;
}

void spm_free(void* h) { delete sp(h); }

long spm_encode(void* h, const char* text, size_t len, int* ids, size_t cap) {
  std::vector<int> out;
  if (!sp(h)->Encode(std::string_view(text, len), &out).ok()) return -1;
  for (size_t i = 0; i < out.size() && i < cap; ++i) ids[i] = out[i];
  return static_cast<long>(out.size());
}

long spm_decode(void* h, const int* ids, size_t n, char* out, size_t cap) {
  std::string text;
  if (!sp(h)->Decode(std::vector<int>(ids, ids + n), &text).ok()) return -1;
  std::memcpy(out, text.data(), text.size() < cap ? text.size() : cap);
  return static_cast<long>(text.size());
}

long spm_id_to_piece(void* h, int id, char* out, size_t cap) {
  if (id < 0 || id >= sp(h)->GetPieceSize()) return -1;
  const std::string& piece = sp(h)->IdToPiece(id);
  std::memcpy(out, piece.data(), piece.size() < cap ? piece.size() : cap);
  return static_cast<long>(piece.size());
}

int spm_vocab_size(void* h) { return sp(h)->GetPieceSize(); }
int spm_bos(void* h) { return sp(h)->bos_id(); }
int spm_eos(void* h) { return sp(h)->eos_id(); }
int spm_pad(void* h) { return sp(h)->pad_id(); }
int spm_unk(void* h) { return sp(h)->unk_id(); }

const moin_spm_api kApi = {MOIN_SPM_ABI_VERSION, spm_load, spm_free, spm_encode, spm_decode, spm_id_to_piece,
                           spm_vocab_size, spm_bos, spm_eos, spm_pad, spm_unk};

}  // namespace

extern "C" __attribute__((visibility("default"))) const moin_spm_api* moin_spm_get_api(void) { return &kApi; }
