// In-process layer decompression (ISA-L gzip inflate, multi-member; libzstd streaming decompression) and the
// image's zstd compression (libzstd, level 3, nbWorkers threads) written straight to the .zst fd with pwrite(2).
// Each call runs as napi async work on libuv's thread pool and handles one chunk; the JS side (../codec.ts)
// keeps one call in flight per stream (backpressure) and the buffers referenced until the call completes.
#include <node_api.h>
#include <isa-l/igzip_lib.h>
#include <zstd.h>
#include <cerrno>
#include <cstring>
#include <string>
#include <unistd.h>

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, nullptr, "napi call failed: " #call); return nullptr; } } while (0)

namespace {

// ---------- decompression ----------
enum DecKind { GZIP = 0, ZSTD_D = 1 };

struct Decoder {
  int kind;
  inflate_state* gz = nullptr;
  ZSTD_DStream* zs = nullptr;
  bool atBoundary = true;   // between gzip members / zstd frames (a clean end of input here is the end of the stream)
  bool trailingZeros = false;
  bool busy = false;
  ~Decoder() { delete gz; if (zs) ZSTD_freeDStream(zs); }
};

struct DecWork {
  napi_async_work work = nullptr;
  napi_ref self = nullptr, in = nullptr, out = nullptr, cb = nullptr;
  Decoder* d;
  const uint8_t* inp; size_t inLen;
  uint8_t* outp; size_t outLen;
  size_t consumed = 0, produced = 0;
  std::string err;
};

void decExecute(napi_env, void* data) {
  DecWork* w = static_cast<DecWork*>(data);
  Decoder* d = w->d;
  const uint8_t* ip = w->inp; size_t il = w->inLen;
  uint8_t* op = w->outp; size_t ol = w->outLen;
  size_t ci = 0, po = 0;
  if (d->kind == GZIP) {
    while (po < ol) {
      if (d->atBoundary) {
        if (ci == il) break;
        if (ip[ci] == 0 || d->trailingZeros) {  // zero padding after the last member (as gzip accepts)
          if (ip[ci] != 0) { w->err = "trailing garbage after the gzip data"; break; }
          d->trailingZeros = true; ci++; continue;
        }
        isal_inflate_init(d->gz);
        d->gz->crc_flag = ISAL_GZIP;
        d->atBoundary = false;
      }
      inflate_state* s = d->gz;
      s->next_in = const_cast<uint8_t*>(ip + ci); s->avail_in = (uint32_t)std::min<size_t>(il - ci, 1u << 30);
      s->next_out = op + po; s->avail_out = (uint32_t)std::min<size_t>(ol - po, 1u << 30);
      uint32_t ai = s->avail_in, ao = s->avail_out;
      int r = isal_inflate(s);
      ci += ai - s->avail_in; po += ao - s->avail_out;
      if (r != ISAL_DECOMP_OK) {
        switch (r) {
          case ISAL_INVALID_BLOCK: w->err = "invalid deflate block"; break;
          case ISAL_INVALID_SYMBOL: w->err = "invalid deflate symbol"; break;
          case ISAL_INVALID_LOOKBACK: w->err = "invalid lookback distance"; break;
          case ISAL_INVALID_WRAPPER: w->err = "not in gzip format"; break;
          case ISAL_UNSUPPORTED_METHOD: w->err = "unsupported compression method"; break;
          case ISAL_INCORRECT_CHECKSUM: w->err = "crc error"; break;
          default: w->err = "inflate error " + std::to_string(r);
        }
        break;
      }
      if (s->block_state == ISAL_BLOCK_FINISH) { d->atBoundary = true; continue; }
      if (ai == s->avail_in && ao == s->avail_out) break;  // no progress: needs more input
    }
  } else {
    while (po < ol) {
      if (ci == il && d->atBoundary) break;
      ZSTD_inBuffer in = { ip + ci, il - ci, 0 };
      ZSTD_outBuffer out = { op + po, ol - po, 0 };
      size_t r = ZSTD_decompressStream(d->zs, &out, &in);
      ci += in.pos; po += out.pos;
      if (ZSTD_isError(r)) { w->err = ZSTD_getErrorName(r); break; }
      if (in.pos == 0 && out.pos == 0) break;  // needs more input (the hint says nothing about frame ends then)
      d->atBoundary = r == 0;
    }
  }
  w->consumed = ci; w->produced = po;
}

void decComplete(napi_env env, napi_status, void* data) {
  DecWork* w = static_cast<DecWork*>(data);
  w->d->busy = false;
  napi_value cb, undef, argv[4];
  napi_get_reference_value(env, w->cb, &cb);
  napi_get_undefined(env, &undef);
  if (w->err.empty()) napi_get_null(env, &argv[0]);
  else napi_create_string_utf8(env, w->err.c_str(), w->err.size(), &argv[0]);
  napi_create_double(env, (double)w->consumed, &argv[1]);
  napi_create_double(env, (double)w->produced, &argv[2]);
  napi_get_boolean(env, w->d->atBoundary, &argv[3]);
  napi_delete_reference(env, w->self); napi_delete_reference(env, w->in); napi_delete_reference(env, w->out); napi_delete_reference(env, w->cb);
  napi_delete_async_work(env, w->work);
  delete w;
  napi_call_function(env, undef, cb, 4, argv, nullptr);
}

void decFinalize(napi_env, void* data, void*) { delete static_cast<Decoder*>(data); }

// decoderNew(kind) → handle
napi_value DecoderNew(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int32_t kind = 0;
  CHECK(napi_get_value_int32(env, argv[0], &kind));
  Decoder* d = new Decoder();
  d->kind = kind;
  if (kind == GZIP) d->gz = new inflate_state();
  else { d->zs = ZSTD_createDStream(); ZSTD_initDStream(d->zs); }
  napi_value h;
  CHECK(napi_create_external(env, d, decFinalize, nullptr, &h));
  return h;
}

// decoderRun(handle, input, inOffset, output, cb(err, consumed, produced, atBoundary))
napi_value DecoderRun(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  void* dp; CHECK(napi_get_value_external(env, argv[0], &dp));
  Decoder* d = static_cast<Decoder*>(dp);
  if (d->busy) { napi_throw_error(env, nullptr, "decoder busy"); return nullptr; }
  void* ib; size_t il; CHECK(napi_get_buffer_info(env, argv[1], &ib, &il));
  int64_t off; CHECK(napi_get_value_int64(env, argv[2], &off));
  void* ob; size_t ol; CHECK(napi_get_buffer_info(env, argv[3], &ob, &ol));
  if (off < 0 || (size_t)off > il) { napi_throw_range_error(env, nullptr, "bad input offset"); return nullptr; }
  DecWork* w = new DecWork();
  w->d = d; w->inp = static_cast<uint8_t*>(ib) + off; w->inLen = il - off; w->outp = static_cast<uint8_t*>(ob); w->outLen = ol;
  CHECK(napi_create_reference(env, argv[0], 1, &w->self));
  CHECK(napi_create_reference(env, argv[1], 1, &w->in));
  CHECK(napi_create_reference(env, argv[3], 1, &w->out));
  CHECK(napi_create_reference(env, argv[4], 1, &w->cb));
  napi_value name; CHECK(napi_create_string_utf8(env, "ironboot:decode", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, nullptr, name, decExecute, decComplete, w, &w->work));
  d->busy = true;
  CHECK(napi_queue_async_work(env, w->work));
  return nullptr;
}

// ---------- compression ----------
struct Encoder {
  ZSTD_CCtx* cc = nullptr;
  int fd;
  int64_t pos;
  uint8_t* out = nullptr;
  size_t outCap = 0;
  bool busy = false;
  void release() { if (cc) { ZSTD_freeCCtx(cc); cc = nullptr; } delete[] out; out = nullptr; }
  ~Encoder() { release(); }
};

struct EncWork {
  napi_async_work work = nullptr;
  napi_ref self = nullptr, in = nullptr, cb = nullptr;
  Encoder* e;
  const uint8_t* inp; size_t inLen;
  bool end;
  int errnum = 0;
  std::string err;
};

bool writeAll(EncWork* w, size_t n) {
  Encoder* e = w->e;
  size_t off = 0;
  while (off < n) {
    ssize_t k = pwrite(e->fd, e->out + off, n - off, e->pos);
    if (k < 0) {
      if (errno == EINTR) continue;
      w->errnum = errno;
      w->err = std::string("write error: ") + strerror(errno);
      return false;
    }
    off += k; e->pos += k;
  }
  return true;
}

void encExecute(napi_env, void* data) {
  EncWork* w = static_cast<EncWork*>(data);
  Encoder* e = w->e;
  if (!e->cc) { w->err = "compressor closed"; return; }
  ZSTD_inBuffer in = { w->inp, w->inLen, 0 };
  for (;;) {
    ZSTD_outBuffer out = { e->out, e->outCap, 0 };
    size_t r = ZSTD_compressStream2(e->cc, &out, &in, w->end ? ZSTD_e_end : ZSTD_e_continue);
    if (ZSTD_isError(r)) { w->err = ZSTD_getErrorName(r); return; }
    if (out.pos && !writeAll(w, out.pos)) return;
    if (w->end ? r == 0 : in.pos == in.size) return;
  }
}

void encComplete(napi_env env, napi_status, void* data) {
  EncWork* w = static_cast<EncWork*>(data);
  w->e->busy = false;
  napi_value cb, undef, argv[3];
  napi_get_reference_value(env, w->cb, &cb);
  napi_get_undefined(env, &undef);
  if (w->err.empty()) napi_get_null(env, &argv[0]);
  else napi_create_string_utf8(env, w->err.c_str(), w->err.size(), &argv[0]);
  napi_create_int32(env, w->errnum, &argv[1]);
  napi_create_double(env, (double)w->e->pos, &argv[2]);
  napi_delete_reference(env, w->self); napi_delete_reference(env, w->cb);
  if (w->in) napi_delete_reference(env, w->in);
  napi_delete_async_work(env, w->work);
  delete w;
  napi_call_function(env, undef, cb, 3, argv, nullptr);
}

void encFinalize(napi_env, void* data, void*) { delete static_cast<Encoder*>(data); }

// encoderNew(fd, position, level, workers) → handle
napi_value EncoderNew(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int32_t fd, level, workers; int64_t pos;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_int64(env, argv[1], &pos));
  CHECK(napi_get_value_int32(env, argv[2], &level));
  CHECK(napi_get_value_int32(env, argv[3], &workers));
  Encoder* e = new Encoder();
  e->fd = fd; e->pos = pos;
  e->cc = ZSTD_createCCtx();
  e->outCap = 1 << 20;
  e->out = new uint8_t[e->outCap];
  ZSTD_CCtx_setParameter(e->cc, ZSTD_c_compressionLevel, level);
  if (workers > 0 && ZSTD_isError(ZSTD_CCtx_setParameter(e->cc, ZSTD_c_nbWorkers, workers))) ZSTD_CCtx_setParameter(e->cc, ZSTD_c_nbWorkers, 0);
  napi_value h;
  CHECK(napi_create_external(env, e, encFinalize, nullptr, &h));
  return h;
}

// encoderWrite(handle, buffer | null, end, cb(err, errno, position))
napi_value EncoderWrite(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  void* ep; CHECK(napi_get_value_external(env, argv[0], &ep));
  Encoder* e = static_cast<Encoder*>(ep);
  if (e->busy) { napi_throw_error(env, nullptr, "encoder busy"); return nullptr; }
  if (!e->cc) { napi_throw_error(env, nullptr, "encoder closed"); return nullptr; }
  EncWork* w = new EncWork();
  w->e = e; w->inp = nullptr; w->inLen = 0;
  napi_valuetype t; CHECK(napi_typeof(env, argv[1], &t));
  if (t != napi_null && t != napi_undefined) {
    void* b; size_t l; CHECK(napi_get_buffer_info(env, argv[1], &b, &l));
    w->inp = static_cast<uint8_t*>(b); w->inLen = l;
    CHECK(napi_create_reference(env, argv[1], 1, &w->in));
  }
  bool end; CHECK(napi_get_value_bool(env, argv[2], &end));
  w->end = end;
  CHECK(napi_create_reference(env, argv[0], 1, &w->self));
  CHECK(napi_create_reference(env, argv[3], 1, &w->cb));
  napi_value name; CHECK(napi_create_string_utf8(env, "ironboot:zstd", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, nullptr, name, encExecute, encComplete, w, &w->work));
  e->busy = true;
  CHECK(napi_queue_async_work(env, w->work));
  return nullptr;
}

// encoderClose(handle): frees the context and its threads (not while a write is running)
napi_value EncoderClose(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  void* ep; CHECK(napi_get_value_external(env, argv[0], &ep));
  Encoder* e = static_cast<Encoder*>(ep);
  if (e->busy) { napi_throw_error(env, nullptr, "encoder busy"); return nullptr; }
  e->release();
  return nullptr;
}

// compressFrame(buffer, level) → Buffer: one zstd frame with the content size
napi_value CompressFrame(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  void* b; size_t l; CHECK(napi_get_buffer_info(env, argv[0], &b, &l));
  int32_t level; CHECK(napi_get_value_int32(env, argv[1], &level));
  size_t cap = ZSTD_compressBound(l);
  uint8_t* tmp = new uint8_t[cap];
  size_t n = ZSTD_compress(tmp, cap, b, l, level);
  if (ZSTD_isError(n)) { delete[] tmp; napi_throw_error(env, nullptr, ZSTD_getErrorName(n)); return nullptr; }
  napi_value out;
  napi_status st = napi_create_buffer_copy(env, n, tmp, nullptr, &out);
  delete[] tmp;
  if (st != napi_ok) { napi_throw_error(env, nullptr, "cannot allocate"); return nullptr; }
  return out;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "decoderNew", nullptr, DecoderNew, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "decoderRun", nullptr, DecoderRun, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "encoderNew", nullptr, EncoderNew, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "encoderWrite", nullptr, EncoderWrite, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "encoderClose", nullptr, EncoderClose, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "compressFrame", nullptr, CompressFrame, nullptr, nullptr, nullptr, napi_default, nullptr },
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
