// ironboot's TFTP transfer loop for files on disk: one thread per transfer, blocking on its own UDP socket.
//
// Why: in Node every DATA packet is one libuv send and every ACK one event-loop wakeup; at windowsize 16 that
// costs more than the kernel's work, and lock-step transfers pay the wakeup latency on every block. Here a
// window leaves in one sendmmsg(2), file bytes come from one pread(2) per 256 KiB read ahead, and an ACK wakes a thread
// blocked in recvfrom(2). Decisions are the same as session.ts (TransferSession), block for block:
//   - the OACK, if any, is resent until ACK 0 arrives; a non-zero ACK before it is ignored;
//   - an ACK that moves the window forward sends the new blocks (acked+1 .. acked+windowsize);
//   - a duplicate/old ACK never sends, except the one-time repair after an ACK inside the window (RFC 7440 §4);
//   - only a timeout resends what is outstanding, maxRetries times in a row, then ERROR 0 and the end; if every
//     block was sent, the end is "unconfirmed" (the client's final ACK was lost) and no ERROR is sent;
//   - a packet from another address or port gets ERROR 5 and changes nothing; an ERROR from the client ends it;
//   - until the client answered anything (or repeated its request: state[1]), only maxUnansweredRetries timeouts, then the end without an ERROR (a
//     spoofed requester never answers, and silence reflects nothing);
//   - after maxTransferMs the transfer ends with ERROR 0 whatever the client does.
// The JS side (native-transfer.ts) negotiates options, opens the file inside the served roots, encodes the
// OACK, and logs and counts the result; this file only moves bytes.
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Result {
  std::string outcome = "failed";
  std::string reason;
  uint64_t acked = 0, sent = 0, retransmitted = 0, bytesSent = 0, strays = 0, malformed = 0, unexpected = 0;
  uint32_t localPort = 0;
};

struct Transfer {
  int fileFd = -1;
  uint64_t size = 0;
  sockaddr_storage local{};
  socklen_t localLen = 0;
  sockaddr_storage peer{};
  socklen_t peerLen = 0;
  uint32_t blksize = 512, windowsize = 1, timeoutMs = 1000, maxRetries = 5, maxUnansweredRetries = 2;
  uint64_t maxTransferMs = 600000;
  std::vector<uint8_t> oack;
  // shared with JS (a Buffer kept alive by stateRef): [0] the client answered (set here); [1] the requester repeated
  // its request before answering (set by JS): it is there, so it gets maxRetries
  volatile uint32_t* state = nullptr;
  // 0: running; 1: cancelled (server closing); 2: evicted (never answered, the slot is needed)
  std::shared_ptr<std::atomic<int>> cancelled;
  napi_threadsafe_function tsfn = nullptr;
  napi_ref stateRef = nullptr;
  napi_ref doneRef = nullptr;
  Result result;
};

uint64_t nowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}

constexpr uint64_t kSliceUs = 50000;
// (sendfile(2) of big blocks from the page cache, header sent with MSG_MORE, measured by hand 25 % slower on loopback than
// this copy: the receiver's copy out of page fragments costs more than ours)
constexpr size_t kCacheBytes = 256 * 1024;

bool samePeer(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    auto& x = reinterpret_cast<const sockaddr_in&>(a);
    auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  auto& x = reinterpret_cast<const sockaddr_in6&>(a);
  auto& y = reinterpret_cast<const sockaddr_in6&>(b);
  return x.sin6_port == y.sin6_port && memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
}

std::vector<uint8_t> errorPacket(uint16_t code, const std::string& msg) {
  std::vector<uint8_t> p(4 + msg.size() + 1, 0);
  p[1] = 5;
  p[2] = uint8_t(code >> 8);
  p[3] = uint8_t(code & 0xff);
  memcpy(p.data() + 4, msg.data(), msg.size());
  return p;
}

class Loop {
 public:
  explicit Loop(Transfer& t) : t_(t), r_(t.result) {
    totalBlocks_ = t.size / t.blksize + 1;
    oackPending_ = !t.oack.empty();
    cache_.resize(std::max<size_t>(kCacheBytes, size_t(t.blksize) * t.windowsize));
    headers_.resize(size_t(t.windowsize) * 4);
    iov_.resize(size_t(t.windowsize) * 2);
    msgs_.resize(t.windowsize);
  }

  void run() {
    sock_ = socket(t_.local.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock_ < 0) return fail("socket: " + std::string(strerror(errno)));
    if (bind(sock_, reinterpret_cast<sockaddr*>(&t_.local), t_.localLen) < 0) return fail("bind: " + std::string(strerror(errno)));
    sockaddr_storage bound{};
    socklen_t bl = sizeof bound;
    if (getsockname(sock_, reinterpret_cast<sockaddr*>(&bound), &bl) == 0) {
      r_.localPort = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in&>(bound).sin_port : reinterpret_cast<sockaddr_in6&>(bound).sin6_port);
    }
    // blocking receives that give up every 50 ms (or at the retransmission deadline, if sooner): one syscall per
    // ACK on the fast path, and the timer and a cancel are looked at between them
    setSlice(kSliceUs);
    endBy_ = nowUs() + t_.maxTransferMs * 1000;
    if (oackPending_) sendOack();
    else sendNew();
    uint8_t pkt[1024];
    while (!done_) {
      sockaddr_storage from{};
      socklen_t fl = sizeof from;
      ssize_t len = recvfrom(sock_, pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&from), &fl);
      if (len >= 0) onDatagram(pkt, size_t(len), from, fl);
      else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return fail("recvfrom: " + std::string(strerror(errno)));
      if (done_) break;
      if (const int why = t_.cancelled->load()) {
        if (why == 2) return finish("timeout", "evicted: the client never answered, and a new request needed the slot");
        return finish("failed", "server closing");
      }
      const uint64_t now = nowUs();
      if (now >= endBy_) {
        const std::string why = "transfer time limit (" + std::to_string(t_.maxTransferMs) + " ms) reached at block " +
                                std::to_string(acked_) + " of " + std::to_string(totalBlocks_);
        auto e = errorPacket(0, why);
        sendTo(e.data(), e.size(), t_.peer, t_.peerLen);
        return finish("timeout", why);
      }
      if (now >= deadline_) {
        onTimeout();
        continue;
      }
      // the timer must fire on time (clients count their own retries against the same timeout), so the last
      // receive before the deadline waits exactly until it
      const uint64_t left = std::min(deadline_, endBy_) - now;
      if (left < kSliceUs) setSlice(left);
      else if (slice_ != kSliceUs) setSlice(kSliceUs);
    }
  }

  ~Loop() {
    if (sock_ >= 0) close(sock_);
  }

 private:
  Transfer& t_;
  Result& r_;
  int sock_ = -1;
  uint64_t totalBlocks_;
  uint64_t acked_ = 0, sent_ = 0, retries_ = 0;
  int64_t gapAt_ = -1;
  bool oackPending_;
  bool done_ = false;
  bool answered_ = false;
  uint64_t deadline_ = 0;
  uint64_t endBy_ = 0;
  // File bytes [cacheOff_, cacheOff_ + cacheLen_): small blocks are served from one pread per 256 KiB, read
  // ahead after a window went out, while the client works on it (tftpd-hpa reads ahead one block)
  std::vector<uint8_t> cache_;
  uint64_t cacheOff_ = 0, cacheLen_ = 0;
  std::vector<uint8_t> headers_;
  std::vector<iovec> iov_;
  std::vector<mmsghdr> msgs_;

  void armTimer() { deadline_ = nowUs() + uint64_t(t_.timeoutMs) * 1000; }

  uint64_t slice_ = 0;
  void setSlice(uint64_t us) {
    slice_ = us;
    timeval tv{time_t(us / 1000000), suseconds_t(us % 1000000)};
    if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;
    setsockopt(sock_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  void sendTo(const uint8_t* p, size_t n, const sockaddr_storage& to, socklen_t tl) {
    for (int tries = 0; tries < 100; tries++) {
      if (sendto(sock_, p, n, 0, reinterpret_cast<const sockaddr*>(&to), tl) >= 0) return;
      if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR) return;  // lost, as a datagram may be
      pollfd pfd{sock_, POLLOUT, 0};
      poll(&pfd, 1, 10);
    }
  }

  void sendOack() {
    sendTo(t_.oack.data(), t_.oack.size(), t_.peer, t_.peerLen);
    armTimer();
  }

  // File bytes [from, to) from the cache, reading from `from` on when it does not hold them; null (and the
  // transfer failed) on a read error
  const uint8_t* bytes(uint64_t from, uint64_t to) {
    if (from >= cacheOff_ && to <= cacheOff_ + cacheLen_) return cache_.data() + (from - cacheOff_);
    const size_t want = size_t(std::min<uint64_t>(t_.size - from, cache_.size()));
    cacheOff_ = from;
    cacheLen_ = 0;
    size_t got = 0;
    while (got < want) {
      ssize_t n = pread(t_.fileFd, cache_.data() + got, want - got, off_t(from + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return failRead("read error: " + std::string(strerror(errno)));
      if (n == 0) return failRead("read error: file shrank while being sent (" + std::to_string(from + got) + " of " + std::to_string(t_.size) + " bytes)");
      got += size_t(n);
    }
    cacheLen_ = want;
    return cache_.data();
  }

  uint64_t blockStart(uint64_t block) const { return (block - 1) * t_.blksize; }
  uint64_t blockEnd(uint64_t block) const { return std::min<uint64_t>(block * t_.blksize, t_.size); }

  static void header(uint8_t* h, uint64_t block) {
    h[0] = 0;
    h[1] = 3;
    h[2] = uint8_t((block >> 8) & 0xff);
    h[3] = uint8_t(block & 0xff);
  }

  // DATA blocks first..last (absolute numbers; the wire carries them modulo 65536)
  bool sendBlocks(uint64_t first, uint64_t last) {
    const bool ok = sendCopied(first, last);
    armTimer();
    return ok;
  }

  // All blocks in sendmmsg calls, their bytes from the cache
  bool sendCopied(uint64_t first, uint64_t last) {
    const uint8_t* data = bytes(blockStart(first), blockEnd(last));
    if (data == nullptr) return false;
    const size_t count = size_t(last - first + 1);
    for (size_t i = 0; i < count; i++) {
      const uint64_t block = first + i;
      uint8_t* h = &headers_[i * 4];
      header(h, block);
      const size_t len = size_t(blockEnd(block) - blockStart(block));
      iov_[i * 2] = {h, 4};
      iov_[i * 2 + 1] = {const_cast<uint8_t*>(data) + (blockStart(block) - blockStart(first)), len};
      msgs_[i] = {};
      msgs_[i].msg_hdr.msg_name = &t_.peer;
      msgs_[i].msg_hdr.msg_namelen = t_.peerLen;
      msgs_[i].msg_hdr.msg_iov = &iov_[i * 2];
      msgs_[i].msg_hdr.msg_iovlen = 2;
      r_.bytesSent += len;
    }
    size_t done = 0;
    int stalls = 0;
    while (done < count) {
      int n = sendmmsg(sock_, &msgs_[done], unsigned(count - done), 0);
      if (n > 0) {
        done += size_t(n);
        continue;
      }
      if ((errno == EAGAIN || errno == ENOBUFS || errno == EINTR) && stalls++ < 100) {
        pollfd pfd{sock_, POLLOUT, 0};
        poll(&pfd, 1, 10);
        continue;
      }
      done++;  // this datagram is lost (e.g. dropped by a firewall): the client's ACKs or our timer recover it
    }
    return true;
  }

  // After new blocks went out: make sure the window the next ACK asks for is in the cache
  void readAhead() {
    if (sent_ >= totalBlocks_) return;
    bytes(blockStart(sent_ + 1), blockEnd(std::min(sent_ + t_.windowsize, totalBlocks_)));
  }

  void sendNew() {
    const uint64_t last = std::min(acked_ + t_.windowsize, totalBlocks_);
    const uint64_t first = sent_ + 1;
    if (first > last) return;
    sent_ = last;
    if (sendBlocks(first, last)) readAhead();
  }

  void onDatagram(const uint8_t* p, size_t len, const sockaddr_storage& from, socklen_t fl) {
    if (!samePeer(from, t_.peer)) {
      r_.strays++;
      auto e = errorPacket(5, "unknown transfer ID");
      sendto(sock_, e.data(), e.size(), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&from), fl);
      return;
    }
    const uint16_t op = len >= 2 ? uint16_t(p[0] << 8 | p[1]) : 0;
    if (len >= 4 && op == 4) {
      t_.state[0] = 1;
      answered_ = true;
      return onAck(uint16_t(p[2] << 8 | p[3]));
    }
    if (len >= 4 && op == 5) {
      t_.state[0] = 1;
      answered_ = true;
      const uint16_t code = uint16_t(p[2] << 8 | p[3]);
      std::string msg;
      for (size_t i = 4; i < len && p[i] != 0 && msg.size() < 200; i++) msg.push_back(p[i] >= 0x20 && p[i] < 0x7f ? char(p[i]) : '?');
      return finish("aborted", "client sent error " + std::to_string(code) + ": " + msg);
    }
    if (len < 4 || op == 0 || op > 6) r_.malformed++;
    else r_.unexpected++;
  }

  void onAck(uint16_t wire) {
    if (oackPending_) {
      if (wire != 0) return;  // not an answer to the OACK: the timer resends it
      oackPending_ = false;
      retries_ = 0;
      return sendNew();
    }
    const uint64_t block = sent_ - ((uint64_t((sent_ & 0xffff) - wire)) & 0xffff);
    if (block <= acked_) {
      if (block == acked_ && gapAt_ == int64_t(block) && sent_ > block) {
        gapAt_ = -1;
        r_.retransmitted += sent_ - block;
        sendBlocks(block + 1, sent_);
      }
      return;
    }
    acked_ = block;
    retries_ = 0;
    if (acked_ == totalBlocks_) return finish("complete", "all blocks acknowledged");
    gapAt_ = acked_ < sent_ ? int64_t(acked_) : -1;
    sendNew();
  }

  void onTimeout() {
    retries_++;
    const uint64_t limit = answered_ || t_.state[1] ? t_.maxRetries : std::min(t_.maxRetries, t_.maxUnansweredRetries);
    if (retries_ > limit) {
      const std::string tries = std::to_string(limit + 1);
      if (!oackPending_ && sent_ == totalBlocks_) {
        return finish("unconfirmed", "every block sent, no ACK for block " + std::to_string(acked_ + 1) + ".." + std::to_string(totalBlocks_) +
                                         " after " + tries + " tries (the client's final ACK was lost, or it left)");
      }
      const std::string what = oackPending_ ? "the OACK" : "block " + std::to_string(acked_ + 1);
      if (!answered_) return finish("timeout", "the client never answered (" + what + " sent " + tries + " times): a vanished or spoofed requester");
      auto e = errorPacket(0, "timed out waiting for the ACK of " + what);
      sendTo(e.data(), e.size(), t_.peer, t_.peerLen);
      return finish("timeout", "no ACK for " + what + " after " + tries + " tries");
    }
    if (oackPending_) return sendOack();
    gapAt_ = -1;
    if (sent_ <= acked_) {
      sendNew();
      if (sent_ <= acked_) armTimer();
      return;
    }
    r_.retransmitted += sent_ - acked_;
    sendBlocks(acked_ + 1, sent_);
  }

  const uint8_t* failRead(const std::string& msg) {
    auto e = errorPacket(0, msg);
    sendTo(e.data(), e.size(), t_.peer, t_.peerLen);
    finish("failed", msg);
    return nullptr;
  }

  void fail(const std::string& msg) { finish("failed", msg); }

  void finish(const char* outcome, const std::string& reason) {
    if (done_) return;
    done_ = true;
    r_.outcome = outcome;
    r_.reason = reason;
    r_.acked = acked_;
    r_.sent = sent_;
  }
};

void threadMain(Transfer* t) {
  {
    Loop loop(*t);
    loop.run();
  }
  close(t->fileFd);
  t->fileFd = -1;
  // deliver() frees t on the JS thread, possibly before napi_call_threadsafe_function has returned here: t must not
  // be touched after the call. Reading t->tsfn for the release did; a herd of 500 crashed the daemon (SIGSEGV) in its
  // TFTP transfers, and test/integration/tftp-native-stress.test.ts crashed in 2 runs of 7 with it.
  napi_threadsafe_function tsfn = t->tsfn;
  napi_call_threadsafe_function(tsfn, t, napi_tsfn_blocking);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
}

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, nullptr, "ironboot tftp native: " #call); \
      return nullptr;                                                 \
    }                                                                 \
  } while (0)

napi_value setU64(napi_env env, napi_value obj, const char* key, uint64_t v) {
  napi_value n;
  napi_create_double(env, double(v), &n);
  napi_set_named_property(env, obj, key, n);
  return obj;
}

// Runs on the JS thread when a transfer's thread is done: calls done(result) and frees the transfer.
void deliver(napi_env env, napi_value /*js_cb*/, void* /*context*/, void* data) {
  std::unique_ptr<Transfer> t(static_cast<Transfer*>(data));
  if (env == nullptr) return;
  napi_value result, s, cb, global, ret;
  napi_create_object(env, &result);
  napi_create_string_utf8(env, t->result.outcome.c_str(), NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, result, "outcome", s);
  napi_create_string_utf8(env, t->result.reason.c_str(), NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, result, "reason", s);
  setU64(env, result, "acked", t->result.acked);
  setU64(env, result, "sent", t->result.sent);
  setU64(env, result, "retransmitted", t->result.retransmitted);
  setU64(env, result, "bytesSent", t->result.bytesSent);
  setU64(env, result, "strays", t->result.strays);
  setU64(env, result, "malformed", t->result.malformed);
  setU64(env, result, "unexpected", t->result.unexpected);
  setU64(env, result, "localPort", t->result.localPort);
  napi_get_reference_value(env, t->doneRef, &cb);
  napi_get_global(env, &global);
  napi_delete_reference(env, t->doneRef);
  napi_delete_reference(env, t->stateRef);
  napi_call_function(env, global, cb, 1, &result, &ret);
}

bool parseAddress(const std::string& ip, uint16_t port, sockaddr_storage& out, socklen_t& len) {
  out = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out);
  if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

std::string getString(napi_env env, napi_value obj, const char* key) {
  napi_value v;
  size_t n = 0;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return "";
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &n) != napi_ok) return "";
  std::string s(n, '\0');
  napi_get_value_string_utf8(env, v, s.data(), n + 1, &n);
  return s;
}

double getNumber(napi_env env, napi_value obj, const char* key) {
  napi_value v;
  double d = 0;
  if (napi_get_named_property(env, obj, key, &v) == napi_ok) napi_get_value_double(env, v, &d);
  return d;
}

void finalizeCancel(napi_env, void* data, void*) { delete static_cast<std::shared_ptr<std::atomic<int>>*>(data); }

// start({fd, size, host, client, clientPort, blksize, windowsize, timeoutMs, maxRetries, oack, state}, done) → handle
napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 2) {
    napi_throw_type_error(env, nullptr, "start(options, done)");
    return nullptr;
  }
  auto t = std::make_unique<Transfer>();
  const std::string host = getString(env, argv[0], "host");
  const std::string client = getString(env, argv[0], "client");
  if (!parseAddress(host, 0, t->local, t->localLen) || !parseAddress(client, uint16_t(getNumber(env, argv[0], "clientPort")), t->peer, t->peerLen) ||
      t->local.ss_family != t->peer.ss_family) {
    napi_throw_error(env, nullptr, ("tftp native: cannot use addresses " + host + " → " + client).c_str());
    return nullptr;
  }
  const int fd = int(getNumber(env, argv[0], "fd"));
  t->fileFd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (t->fileFd < 0) {
    napi_throw_error(env, nullptr, ("tftp native: dup: " + std::string(strerror(errno))).c_str());
    return nullptr;
  }
  t->size = uint64_t(getNumber(env, argv[0], "size"));
  t->blksize = uint32_t(getNumber(env, argv[0], "blksize"));
  t->windowsize = uint32_t(getNumber(env, argv[0], "windowsize"));
  t->timeoutMs = uint32_t(getNumber(env, argv[0], "timeoutMs"));
  t->maxRetries = uint32_t(getNumber(env, argv[0], "maxRetries"));
  t->maxUnansweredRetries = uint32_t(getNumber(env, argv[0], "maxUnansweredRetries"));
  t->maxTransferMs = uint64_t(getNumber(env, argv[0], "maxTransferMs"));
  if (t->maxTransferMs == 0) t->maxTransferMs = 600000;
  if (t->blksize < 8 || t->blksize > 65464 || t->windowsize < 1 || t->windowsize > 65535 || t->timeoutMs < 1 ||
      uint64_t(t->blksize) * t->windowsize > (16u << 20)) {
    close(t->fileFd);
    napi_throw_range_error(env, nullptr, "tftp native: blksize, windowsize or timeoutMs out of range");
    return nullptr;
  }
  napi_value oack, state;
  bool isBuf = false;
  if (napi_get_named_property(env, argv[0], "oack", &oack) == napi_ok && napi_is_buffer(env, oack, &isBuf) == napi_ok && isBuf) {
    void* data;
    size_t len;
    napi_get_buffer_info(env, oack, &data, &len);
    t->oack.assign(static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + len);
  }
  if (napi_get_named_property(env, argv[0], "state", &state) != napi_ok || napi_is_buffer(env, state, &isBuf) != napi_ok || !isBuf) {
    close(t->fileFd);
    napi_throw_type_error(env, nullptr, "tftp native: options.state must be a Buffer of 8 bytes");
    return nullptr;
  }
  void* stateData;
  size_t stateLen;
  napi_get_buffer_info(env, state, &stateData, &stateLen);
  if (stateLen < 8 || (reinterpret_cast<uintptr_t>(stateData) & 3) != 0) {
    close(t->fileFd);
    napi_throw_type_error(env, nullptr, "tftp native: options.state must be an aligned Buffer of 8 bytes");
    return nullptr;
  }
  t->state = static_cast<volatile uint32_t*>(stateData);
  CHECK(napi_create_reference(env, state, 1, &t->stateRef));
  CHECK(napi_create_reference(env, argv[1], 1, &t->doneRef));
  napi_value name;
  napi_create_string_utf8(env, "ironboot-tftp-transfer", NAPI_AUTO_LENGTH, &name);
  CHECK(napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, nullptr, deliver, &t->tsfn));
  t->cancelled = std::make_shared<std::atomic<int>>(0);
  napi_value handle;
  CHECK(napi_create_external(env, new std::shared_ptr<std::atomic<int>>(t->cancelled), finalizeCancel, nullptr, &handle));
  std::thread(threadMain, t.release()).detach();
  return handle;
}

// cancel(handle, why = 1): the transfer ends within 50 ms; why 1: outcome "failed", reason "server closing";
// why 2: outcome "timeout", evicted (its client never answered)
napi_value Cancel(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  void* data = nullptr;
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || data == nullptr) {
    napi_throw_type_error(env, nullptr, "cancel(handle)");
    return nullptr;
  }
  double why = 1;
  if (argc >= 2) napi_get_value_double(env, argv[1], &why);
  int expected = 0;
  (*static_cast<std::shared_ptr<std::atomic<int>>*>(data))->compare_exchange_strong(expected, why == 2 ? 2 : 1);
  return nullptr;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"start", nullptr, Start, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"cancel", nullptr, Cancel, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
