// ironboot DHCP native helper: setsockopt(SO_BINDTODEVICE) on the fd of a Node dgram socket.
// Node's dgram has no SO_BINDTODEVICE / IP_PKTINFO; without it a reply to 255.255.255.255 either fails
// (ENETUNREACH, no default route) or leaves by the default route's interface. Bound to a device, the kernel
// sends limited broadcasts out of that device and delivers to the socket only what arrived on it.
#include <node_api.h>
#include <sys/socket.h>
#include <net/if.h>
#include <cerrno>
#include <cstring>
#include <string>

static napi_value Throw(napi_env env, const std::string& msg) {
  napi_throw_error(env, nullptr, msg.c_str());
  return nullptr;
}

// bindToDevice(fd: number, ifname: string): void
static napi_value BindToDevice(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 2)
    return Throw(env, "bindToDevice(fd, ifname): two arguments expected");
  int32_t fd = -1;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0)
    return Throw(env, "bindToDevice: fd must be a non-negative integer");
  char name[IFNAMSIZ + 1] = {0};
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[1], name, sizeof(name), &len) != napi_ok || len == 0 || len >= IFNAMSIZ)
    return Throw(env, "bindToDevice: ifname must be a non-empty interface name shorter than 16 bytes");
  if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, name, (socklen_t)len) != 0) {
    int e = errno;
    return Throw(env, std::string("setsockopt(SO_BINDTODEVICE, ") + name + "): " + strerror(e));
  }
  return nullptr;
}

// interfaceIndex(ifname: string): number (0 if unknown)
static napi_value InterfaceIndex(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char name[IFNAMSIZ + 1] = {0};
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof(name), &len) != napi_ok)
    return Throw(env, "interfaceIndex(ifname): a string is expected");
  napi_value out;
  napi_create_uint32(env, if_nametoindex(name), &out);
  return out;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"bindToDevice", nullptr, BindToDevice, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"interfaceIndex", nullptr, InterfaceIndex, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
