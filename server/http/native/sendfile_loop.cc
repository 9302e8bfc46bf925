// ironboot's HTTP body sender for files on disk: sendfile(2) from the file to the client's TCP socket, for every
// response at once, on threads of its own.
//
// Why: Node has no sendfile. Its own path (read into a JS Buffer, write it to the socket) copies every byte twice
// through user space and wakes the event loop per chunk; under a rack of machines fetching kernels, initramfs and
// container disks at once that is most of the daemon's CPU and its event-loop lag. nginx sends these bodies with
// sendfile(2); so does this: the kernel copies page cache → socket, the JS thread only writes the headers and
// hears back once per response.
//
// A few threads (one per core, at most 4), each with its own epoll set; responses go to them in turn. A response
// whose socket is full waits for EPOLLOUT (edge-triggered) and its thread serves the others meanwhile. More than
// one thread because on a local link much of the network stack's work (veth, bridge, the receiver's softirq) runs
// on the sending thread's CPU: one thread alone capped a rack's transfers at one core (nginx runs a worker per core).
//
// The addon holds its own duplicates of the socket and file descriptors, so whatever Node does with its own (close
// on a client reset, say) never races with a sendfile here; a closed client shows up as EPIPE/ECONNRESET. A response
// that makes no progress for idleMs ends as "stalled". JS: send(...) → id, cancel(id) when the socket closes;
// done(error | null, bytesSent) runs on the JS thread.
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

uint64_t nowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

constexpr size_t kChunk = 4u << 20;  // per sendfile(2) call; the socket's buffer bounds what one call moves anyway

struct Job {
  uint64_t id = 0;
  int sock = -1, file = -1;
  off_t offset = 0;
  uint64_t left = 0, sent = 0;
  uint64_t idleMs = 30000, lastProgress = 0;
  bool watched = false;
  std::string error;  // empty: all sent
  napi_threadsafe_function tsfn = nullptr;
  napi_ref doneRef = nullptr;
};

class Loop {
 public:
  bool start(std::string& why) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ep_ < 0 || wake_ < 0) { why = std::string("epoll/eventfd: ") + strerror(errno); return false; }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, wake_, &ev) < 0) { why = std::string("epoll_ctl: ") + strerror(errno); return false; }
    std::thread([this] { run(); }).detach();
    return true;
  }

  void submit(Job* j) {
    { std::lock_guard<std::mutex> g(mu_); incoming_.push_back(j); }
    poke();
  }

  void cancel(uint64_t id) {
    { std::lock_guard<std::mutex> g(mu_); cancels_.push_back(id); }
    poke();
  }

 private:
  void poke() {
    uint64_t one = 1;
    ssize_t r = write(wake_, &one, sizeof one);
    (void)r;
  }

  void run() {
    epoll_event evs[128];
    for (;;) {
      int n = epoll_wait(ep_, evs, 128, 1000);
      for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == 0) {
          uint64_t v;
          while (read(wake_, &v, sizeof v) > 0) {}
          continue;
        }
        auto it = jobs_.find(evs[i].data.u64);
        if (it != jobs_.end()) pump(it->second);
      }
      std::deque<Job*> in;
      std::deque<uint64_t> cancels;
      {
        std::lock_guard<std::mutex> g(mu_);
        in.swap(incoming_);
        cancels.swap(cancels_);
      }
      for (Job* j : in) {
        j->lastProgress = nowMs();
        jobs_[j->id] = j;
        pump(j);
      }
      for (uint64_t id : cancels) {
        auto it = jobs_.find(id);
        if (it != jobs_.end()) finish(it->second, "cancelled: the client's connection closed");
      }
      const uint64_t now = nowMs();
      if (now - lastSweep_ >= 1000) {
        lastSweep_ = now;
        std::deque<Job*> stalled;
        for (auto& [id, j] : jobs_) if (now - j->lastProgress > j->idleMs) stalled.push_back(j);
        for (Job* j : stalled) finish(j, "stalled: the client read nothing for " + std::to_string(j->idleMs / 1000) + " s");
      }
    }
  }

  // Sends until the socket is full (then waits for EPOLLOUT), the body is out, or an error.
  void pump(Job* j) {
    while (j->left > 0) {
      ssize_t s = sendfile(j->sock, j->file, &j->offset, j->left < kChunk ? size_t(j->left) : kChunk);
      if (s > 0) {
        j->left -= uint64_t(s);
        j->sent += uint64_t(s);
        j->lastProgress = nowMs();
        continue;
      }
      if (s == 0) return finish(j, "the file is shorter than its length (truncated while being sent?)");
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (!j->watched) {
          epoll_event ev{};
          ev.events = EPOLLOUT | EPOLLET;
          ev.data.u64 = j->id;
          if (epoll_ctl(ep_, EPOLL_CTL_ADD, j->sock, &ev) < 0) return finish(j, std::string("epoll_ctl: ") + strerror(errno));
          j->watched = true;
        }
        return;
      }
      return finish(j, std::string("sendfile: ") + strerror(errno));
    }
    finish(j, "");
  }

  void finish(Job* j, const std::string& error) {
    if (j->watched) epoll_ctl(ep_, EPOLL_CTL_DEL, j->sock, nullptr);
    close(j->sock);
    close(j->file);
    j->error = error;
    jobs_.erase(j->id);
    napi_threadsafe_function tsfn = j->tsfn;
    napi_call_threadsafe_function(tsfn, j, napi_tsfn_blocking);
    napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  }

  int ep_ = -1, wake_ = -1;
  uint64_t lastSweep_ = 0;
  std::mutex mu_;
  std::deque<Job*> incoming_;
  std::deque<uint64_t> cancels_;
  std::unordered_map<uint64_t, Job*> jobs_;  // the loop thread's own
};

std::vector<Loop*> loops;  // started on the first send (JS thread only)
std::atomic<uint64_t> nextId{1};
std::unordered_map<uint64_t, Loop*>* owners = nullptr;  // id → its loop, for cancel (JS thread only)

#define CHECK(call)                                                       \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error(env, nullptr, "ironboot sendfile native: " #call); \
      return nullptr;                                                     \
    }                                                                     \
  } while (0)

// On the JS thread, once per response: done(error | null, bytesSent).
void deliver(napi_env env, napi_value, void*, void* data) {
  Job* j = static_cast<Job*>(data);
  if (owners != nullptr) owners->erase(j->id);
  if (env != nullptr) {
    napi_value argv[2], cb, global, ret;
    if (j->error.empty()) napi_get_null(env, &argv[0]);
    else napi_create_string_utf8(env, j->error.c_str(), NAPI_AUTO_LENGTH, &argv[0]);
    napi_create_double(env, double(j->sent), &argv[1]);
    napi_get_reference_value(env, j->doneRef, &cb);
    napi_get_global(env, &global);
    napi_delete_reference(env, j->doneRef);
    napi_call_function(env, global, cb, 2, argv, &ret);
  }
  delete j;
}

double numberArg(napi_env env, napi_value v) {
  double d = -1;
  napi_get_value_double(env, v, &d);
  return d;
}

// send(socketFd, fileFd, offset, length, idleMs, done) → id. Both descriptors are duplicated: the caller may close
// its own at once.
napi_value Send(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 6) {
    napi_throw_type_error(env, nullptr, "send(socketFd, fileFd, offset, length, idleMs, done)");
    return nullptr;
  }
  if (loops.empty()) {
    unsigned n = std::thread::hardware_concurrency();
    n = n == 0 ? 1 : (n > 4 ? 4 : n);
    for (unsigned i = 0; i < n; i++) {
      auto* l = new Loop();
      std::string why;
      if (!l->start(why)) {
        delete l;
        if (loops.empty()) {
          napi_throw_error(env, nullptr, ("sendfile native: " + why).c_str());
          return nullptr;
        }
        break;
      }
      loops.push_back(l);
    }
    owners = new std::unordered_map<uint64_t, Loop*>();
  }
  const int sock = int(numberArg(env, argv[0])), file = int(numberArg(env, argv[1]));
  const double offset = numberArg(env, argv[2]), length = numberArg(env, argv[3]), idle = numberArg(env, argv[4]);
  if (sock < 0 || file < 0 || offset < 0 || length < 0 || idle < 1) {
    napi_throw_range_error(env, nullptr, "sendfile native: descriptors, offset, length or idleMs out of range");
    return nullptr;
  }
  auto* j = new Job();
  j->sock = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  j->file = fcntl(file, F_DUPFD_CLOEXEC, 0);
  if (j->sock < 0 || j->file < 0) {
    std::string why = std::string("sendfile native: dup: ") + strerror(errno);
    if (j->sock >= 0) close(j->sock);
    if (j->file >= 0) close(j->file);
    delete j;
    napi_throw_error(env, nullptr, why.c_str());
    return nullptr;
  }
  j->id = nextId++;
  j->offset = off_t(offset);
  j->left = uint64_t(length);
  j->idleMs = uint64_t(idle);
  CHECK(napi_create_reference(env, argv[5], 1, &j->doneRef));
  napi_value name;
  napi_create_string_utf8(env, "ironboot-sendfile", NAPI_AUTO_LENGTH, &name);
  CHECK(napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, nullptr, deliver, &j->tsfn));
  const uint64_t id = j->id;
  Loop* l = loops[id % loops.size()];
  (*owners)[id] = l;
  l->submit(j);
  napi_value out;
  napi_create_double(env, double(id), &out);
  return out;
}

// cancel(id): a response still under way ends ("cancelled"); one already done is left alone.
napi_value Cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 1 || owners == nullptr) return nullptr;
  auto it = owners->find(uint64_t(numberArg(env, argv[0])));
  if (it != owners->end()) it->second->cancel(it->first);
  return nullptr;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"send", nullptr, Send, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"cancel", nullptr, Cancel, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
