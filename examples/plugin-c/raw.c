// A statesnap format plugin in C: "raw", entries stored uncompressed, for
// snapshots kept and served on one fast local network or disk, where
// compressing costs more than the bytes it saves.
//
// Chunk: "SRAW" then framed entries (u32le key length, key, u32le value
// length, value), always cut at an entry boundary, at most chunk_bytes
// (default 8,000,000) unless a single entry is larger.
//
// Built by build.sh: clang (wasm32-wasi, wasi-libc) over the bindings
// wit-bindgen's C generator makes from wit/plugin.wit, then
// `wasm-tools component new`. Determinism: output depends only on the
// entries and chunk_bytes; no clock, randomness, floats or hash maps.

#include <stdlib.h>
#include <string.h>

#include "format_plugin.h"

typedef exports_statesnap_plugin_format_plugin_error_t plugin_error_t;

static const uint8_t MAGIC[4] = {'S', 'R', 'A', 'W'};
#define DEFAULT_CHUNK 8000000u
#define MIN_CHUNK 1024u
#define MAX_CHUNK 15000000u

// A growable byte buffer.
typedef struct {
  uint8_t *ptr;
  size_t len, cap;
} buf_t;

static bool buf_reserve(buf_t *b, size_t extra) {
  if (b->len + extra <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra) cap *= 2;
  uint8_t *p = realloc(b->ptr, cap);
  if (!p) return false;
  b->ptr = p;
  b->cap = cap;
  return true;
}

static bool buf_push(buf_t *b, const uint8_t *data, size_t n) {
  if (!buf_reserve(b, n)) return false;
  memcpy(b->ptr + b->len, data, n);
  b->len += n;
  return true;
}

static uint32_t read_u32le(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// The length of the framed entry at p (of n bytes), or 0 if it is cut short.
static size_t entry_len(const uint8_t *p, size_t n) {
  if (n < 4) return 0;
  size_t k = read_u32le(p);
  if (n - 4 < k + 4) return 0;
  size_t v = read_u32le(p + 4 + k);
  if (n - 8 - k < v) return 0;
  return 8 + k + v;
}

static void error(plugin_error_t *err, uint8_t tag, const char *msg) {
  err->tag = tag;
  format_plugin_string_dup(&err->val.invalid_input, msg);  // every case holds a string
}

// --- describe ---------------------------------------------------------------

void exports_statesnap_plugin_format_describe(exports_statesnap_plugin_format_description_t *ret) {
  format_plugin_string_dup(&ret->name, "raw-c");
  format_plugin_string_dup(&ret->version, "0.1.0");
  ret->format = 101;
  ret->params.len = 1;
  ret->params.ptr = calloc(1, sizeof(exports_statesnap_plugin_format_param_t));
  format_plugin_string_dup(&ret->params.ptr[0].name, "chunk_bytes");
  format_plugin_string_dup(&ret->params.ptr[0].value, "8000000");
  format_plugin_string_dup(&ret->summary, "uncompressed entries in chunks, for local use (written in C)");
}

// chunk_bytes from the parameters; false (with err set) on a bad one.
static bool chunk_bytes_of(exports_statesnap_plugin_format_list_param_t *params, uint32_t *out,
                           plugin_error_t *err) {
  bool ok = true;
  *out = DEFAULT_CHUNK;
  for (size_t i = 0; i < params->len && ok; i++) {
    format_plugin_string_t *name = &params->ptr[i].name, *value = &params->ptr[i].value;
    if (name->len != 11 || memcmp(name->ptr, "chunk_bytes", 11) != 0) {
      error(err, EXPORTS_STATESNAP_PLUGIN_FORMAT_PLUGIN_ERROR_INVALID_PARAMS, "unknown parameter (raw-c knows chunk_bytes)");
      ok = false;
      break;
    }
    uint64_t v = 0;
    if (value->len == 0 || value->len > 9) ok = false;
    for (size_t j = 0; j < value->len && ok; j++) {
      if (value->ptr[j] < '0' || value->ptr[j] > '9') ok = false;
      v = v * 10 + (value->ptr[j] - '0');
    }
    if (!ok || v < MIN_CHUNK || v > MAX_CHUNK) {
      error(err, EXPORTS_STATESNAP_PLUGIN_FORMAT_PLUGIN_ERROR_INVALID_PARAMS,
            "chunk_bytes must be a whole number from 1024 to 15000000");
      ok = false;
    }
    *out = (uint32_t)v;
  }
  exports_statesnap_plugin_format_list_param_free(params);
  return ok;
}

// --- writer -----------------------------------------------------------------

struct exports_statesnap_plugin_format_writer_t {
  uint32_t chunk_bytes;
  buf_t current;  // the chunk being filled, MAGIC first
  buf_t partial;  // an entry split across batches (the host never splits one, but be safe)
};

bool exports_statesnap_plugin_format_new_writer(exports_statesnap_plugin_format_list_param_t *params,
                                                exports_statesnap_plugin_format_own_writer_t *ret,
                                                plugin_error_t *err) {
  uint32_t chunk_bytes;
  if (!chunk_bytes_of(params, &chunk_bytes, err)) return false;
  exports_statesnap_plugin_format_writer_t *w = calloc(1, sizeof *w);
  w->chunk_bytes = chunk_bytes;
  *ret = exports_statesnap_plugin_format_writer_new(w);
  return true;
}

void exports_statesnap_plugin_format_writer_destructor(exports_statesnap_plugin_format_writer_t *w) {
  free(w->current.ptr);
  free(w->partial.ptr);
  free(w);
}

// Moves the current chunk into the output list.
static bool emit(exports_statesnap_plugin_format_writer_t *w, buf_t *out_chunks) {
  format_plugin_list_u8_t chunk = {w->current.ptr, w->current.len};
  if (!buf_push(out_chunks, (const uint8_t *)&chunk, sizeof chunk)) return false;
  w->current = (buf_t){0};
  return true;
}

static bool add_entry(exports_statesnap_plugin_format_writer_t *w, const uint8_t *e, size_t n, buf_t *out) {
  if (w->current.len > sizeof MAGIC && w->current.len + n > w->chunk_bytes && !emit(w, out)) return false;
  if (w->current.len == 0 && !buf_push(&w->current, MAGIC, sizeof MAGIC)) return false;
  return buf_push(&w->current, e, n);
}

static void out_list(buf_t *out, format_plugin_list_list_u8_t *ret) {
  ret->ptr = (format_plugin_list_u8_t *)out->ptr;
  ret->len = out->len / sizeof(format_plugin_list_u8_t);
}

bool exports_statesnap_plugin_format_method_writer_write(exports_statesnap_plugin_format_borrow_writer_t w,
                                                         format_plugin_list_u8_t *batch,
                                                         format_plugin_list_list_u8_t *ret, plugin_error_t *err) {
  buf_t out = {0};
  bool ok = buf_push(&w->partial, batch->ptr, batch->len);
  format_plugin_list_u8_free(batch);
  size_t at = 0;
  while (ok && at < w->partial.len) {
    size_t n = entry_len(w->partial.ptr + at, w->partial.len - at);
    if (n == 0) break;
    ok = add_entry(w, w->partial.ptr + at, n, &out);
    at += n;
  }
  if (!ok) {
    error(err, EXPORTS_STATESNAP_PLUGIN_FORMAT_PLUGIN_ERROR_INTERNAL, "out of memory");
    return false;
  }
  memmove(w->partial.ptr, w->partial.ptr + at, w->partial.len - at);
  w->partial.len -= at;
  out_list(&out, ret);
  return true;
}

bool exports_statesnap_plugin_format_method_writer_finish(exports_statesnap_plugin_format_borrow_writer_t w,
                                                          format_plugin_list_list_u8_t *ret, plugin_error_t *err) {
  if (w->partial.len != 0) {
    error(err, EXPORTS_STATESNAP_PLUGIN_FORMAT_PLUGIN_ERROR_INVALID_INPUT, "the entries end in the middle of an entry");
    return false;
  }
  buf_t out = {0};
  // At least one chunk, even for an empty state.
  if (w->current.len == 0 && !buf_push(&w->current, MAGIC, sizeof MAGIC)) goto oom;
  if (!emit(w, &out)) goto oom;
  out_list(&out, ret);
  return true;
oom:
  error(err, EXPORTS_STATESNAP_PLUGIN_FORMAT_PLUGIN_ERROR_INTERNAL, "out of memory");
  return false;
}

// --- reader -----------------------------------------------------------------

struct exports_statesnap_plugin_format_reader_t {
  buf_t pending;  // entries fed and not yet returned
  size_t at;      // where the next entry starts in pending
};

bool exports_statesnap_plugin_format_new_reader(exports_statesnap_plugin_format_list_param_t *params,
                                                exports_statesnap_plugin_format_own_reader_t *ret,
                                                plugin_error_t *err) {
  uint32_t chunk_bytes;
  if (!chunk_bytes_of(params, &chunk_bytes, err)) return false;
  *ret = exports_statesnap_plugin_format_reader_new(calloc(1, sizeof(exports_statesnap_plugin_format_reader_t)));
  return true;
}

void exports_statesnap_plugin_format_reader_destructor(exports_statesnap_plugin_format_reader_t *r) {
  free(r->pending.ptr);
  free(r);
}

bool exports_statesnap_plugin_format_method_reader_feed(exports_statesnap_plugin_format_borrow_reader_t r,
                                                        format_plugin_list_u8_t *chunk, plugin_error_t *err) {
  bool ok = true;
  if (chunk->len < sizeof MAGIC || memcmp(chunk->ptr, MAGIC, sizeof MAGIC) != 0) {
    error(err, EXPORTS_STATESNAP_PLUGIN_FORMAT_PLUGIN_ERROR_INVALID_INPUT, "not a raw-c chunk (no SRAW header)");
    ok = false;
  } else {
    // Drop what was returned, then append this chunk's entries; every one
    // must be whole (the writer cuts at entry boundaries).
    memmove(r->pending.ptr, r->pending.ptr + r->at, r->pending.len - r->at);
    r->pending.len -= r->at;
    r->at = 0;
    size_t start = r->pending.len;
    ok = buf_push(&r->pending, chunk->ptr + sizeof MAGIC, chunk->len - sizeof MAGIC);
    if (!ok) error(err, EXPORTS_STATESNAP_PLUGIN_FORMAT_PLUGIN_ERROR_INTERNAL, "out of memory");
    for (size_t at = start; ok && at < r->pending.len;) {
      size_t n = entry_len(r->pending.ptr + at, r->pending.len - at);
      if (n == 0) {
        error(err, EXPORTS_STATESNAP_PLUGIN_FORMAT_PLUGIN_ERROR_INVALID_INPUT, "a chunk ends in the middle of an entry");
        ok = false;
      }
      at += n;
    }
  }
  format_plugin_list_u8_free(chunk);
  return ok;
}

bool exports_statesnap_plugin_format_method_reader_next(exports_statesnap_plugin_format_borrow_reader_t r,
                                                        uint32_t max_bytes, format_plugin_option_list_u8_t *ret,
                                                        plugin_error_t *err) {
  (void)err;
  size_t end = r->at;
  while (end < r->pending.len) {
    size_t n = entry_len(r->pending.ptr + end, r->pending.len - end);
    if (end > r->at && end - r->at + n > max_bytes) break;  // one large entry may exceed max_bytes
    end += n;
  }
  if (end == r->at) {
    ret->is_some = false;
    return true;
  }
  ret->is_some = true;
  ret->val.len = end - r->at;
  ret->val.ptr = malloc(ret->val.len);
  memcpy(ret->val.ptr, r->pending.ptr + r->at, ret->val.len);
  r->at = end;
  return true;
}

bool exports_statesnap_plugin_format_method_reader_finish(exports_statesnap_plugin_format_borrow_reader_t r,
                                                          plugin_error_t *err) {
  if (r->at != r->pending.len) {
    error(err, EXPORTS_STATESNAP_PLUGIN_FORMAT_PLUGIN_ERROR_INVALID_INPUT, "entries were left unread");
    return false;
  }
  return true;
}
