// The plain C interface of libmoin_spm.so, the only code that touches Debian's libsentencepiece. moin
// loads it with dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND): sentencepiece's embedded protobuf then
// binds to itself and never to LibTorch's copy (they clash when linked into one executable).
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOIN_SPM_ABI_VERSION 1

typedef struct moin_spm_api {
  int abi_version;
  // Returns a handle or NULL with a message in err.
  void* (*load)(const char* model_path, char* err, size_t err_len);
  void (*free)(void* handle);
  // Writes up to cap ids; returns how many the text encodes to (call again with a bigger buffer if > cap),
  // or -1 on error.
  long (*encode)(void* handle, const char* text, size_t text_len, int* ids, size_t cap);
  // Writes up to cap bytes (no terminator); returns the decoded length, or -1 on error.
  long (*decode)(void* handle, const int* ids, size_t n, char* out, size_t cap);
  long (*id_to_piece)(void* handle, int id, char* out, size_t cap);
  int (*vocab_size)(void* handle);
  int (*bos_id)(void* handle);
  int (*eos_id)(void* handle);
  int (*pad_id)(void* handle);
  int (*unk_id)(void* handle);
} moin_spm_api;

// Training is not in here: sentencepiece's trainer logs through std::cerr, which under RTLD_DEEPBIND
// binds to libstdc++'s uninitialised copy of it (the executable owns the live one) and crashes. It runs
// as its own small process instead, moin_spm_train (spm_train_main.cpp), which links no LibTorch.

// The one exported symbol.
const moin_spm_api* moin_spm_get_api(void);

#ifdef __cplusplus
}
#endif
