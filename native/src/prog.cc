// Programs (info, attach as links, test runs, pinning) and links (pin, update, detach, iterators).
#include <fcntl.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common.h"

namespace sluice {

Nan::Persistent<v8::Function> ProgHandle::constructor_;
Nan::Persistent<v8::FunctionTemplate> ProgHandle::template_;
Nan::Persistent<v8::Function> LinkHandle::constructor_;
Nan::Persistent<v8::FunctionTemplate> LinkHandle::template_;

namespace {

std::string ProgTypeName(uint32_t type) {
  const char* name = libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(type));
  return name != nullptr ? name : "unknown(" + std::to_string(type) + ")";
}

std::string AttachTypeName(int type) {
  if (type < 0) return "";
  const char* name = libbpf_bpf_attach_type_str(static_cast<bpf_attach_type>(type));
  return name != nullptr ? name : "unknown(" + std::to_string(type) + ")";
}

// Closes an fd on scope exit.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

bool GetProgInfo(int fd, bpf_prog_info* out) {
  memset(out, 0, sizeof(*out));
  uint32_t length = sizeof(*out);
  return bpf_obj_get_info_by_fd(fd, out, &length) == 0;
}

// Runs fn inside the network namespace at ns_path (this thread only), then returns to the original.
template <typename Fn>
bool InNetns(const std::string& ns_path, const std::string& op, Fn fn) {
  if (ns_path.empty()) {
    fn();
    return true;
  }
  FdGuard original(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (original.get() < 0) {
    ThrowBpfError(op + ": open /proc/thread-self/ns/net", errno);
    return false;
  }
  FdGuard target(open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (target.get() < 0) {
    ThrowBpfError(op + ": open netns", errno, "", ns_path);
    return false;
  }
  if (setns(target.get(), CLONE_NEWNET) != 0) {
    ThrowBpfError(op + ": setns", errno, "", ns_path);
    return false;
  }
  fn();
  int saved = errno;
  if (setns(original.get(), CLONE_NEWNET) != 0) {
    // Cannot happen with the rights that let us enter; if it does, say so loudly rather than abort.
    ThrowBpfError(op + ": setns back to the original netns", errno, "",
                  "the main thread is still in " + ns_path);
    return false;
  }
  errno = saved;
  return true;
}

}  // namespace

// ---- ProgHandle ---------------------------------------------------------------------------------

NAN_MODULE_INIT(ProgHandle::Init) {
  v8::Local<v8::FunctionTemplate> tpl = Nan::New<v8::FunctionTemplate>(New);
  tpl->SetClassName(Nan::New("BpfProgramHandle").ToLocalChecked());
  tpl->InstanceTemplate()->SetInternalFieldCount(1);
  Nan::SetPrototypeMethod(tpl, "fd", Fd);
  Nan::SetPrototypeMethod(tpl, "info", Info);
  Nan::SetPrototypeMethod(tpl, "attachCgroup", AttachCgroup);
  Nan::SetPrototypeMethod(tpl, "attachXdp", AttachXdp);
  Nan::SetPrototypeMethod(tpl, "attachSockmap", AttachSockmap);
  Nan::SetPrototypeMethod(tpl, "attachIter", AttachIter);
  Nan::SetPrototypeMethod(tpl, "testRun", TestRun);
  Nan::SetPrototypeMethod(tpl, "pin", Pin);
  Nan::SetPrototypeMethod(tpl, "close", CloseMethod);
  template_.Reset(tpl);
  constructor_.Reset(Nan::GetFunction(tpl).ToLocalChecked());
}

NAN_METHOD(ProgHandle::New) {
  if (!info.IsConstructCall()) return ThrowArgError("BpfProgramHandle", "use new");
  (new ProgHandle())->Wrap(info.This());
  info.GetReturnValue().Set(info.This());
}

v8::Local<v8::Value> ProgHandle::Make(int fd, const std::string& name, const std::string& section,
                                      int attach_type, const std::string& op) {
  bpf_prog_info prog_info;
  if (!GetProgInfo(fd, &prog_info)) {
    int err = errno;
    close(fd);
    ThrowBpfError(op + ": bpf_obj_get_info_by_fd", err);
    return v8::Local<v8::Value>();
  }
  v8::Local<v8::Object> handle;
  if (!Nan::NewInstance(Nan::New(constructor_)).ToLocal(&handle)) {
    close(fd);
    return v8::Local<v8::Value>();
  }
  ProgHandle* self = ObjectWrap::Unwrap<ProgHandle>(handle);
  self->fd_ = fd;
  self->type_ = prog_info.type;
  self->attach_type_ = attach_type;
  self->name_ = name.empty() ? prog_info.name : name;
  self->section_ = section;
  return handle;
}

ProgHandle* ProgHandle::Unwrap(v8::Local<v8::Value> value, const std::string& op) {
  if (!Nan::New(template_)->HasInstance(value)) {
    ThrowArgError(op, "expected a program handle");
    return nullptr;
  }
  ProgHandle* prog = ObjectWrap::Unwrap<ProgHandle>(value.As<v8::Object>());
  return prog->CheckOpen(op) ? prog : nullptr;
}

ProgHandle::~ProgHandle() { Close(); }

void ProgHandle::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool ProgHandle::CheckOpen(const std::string& op) {
  if (fd_ >= 0) return true;
  ThrowBpfError(op, EBADF, "", "program is closed");
  return false;
}

bool ProgHandle::ResolveAttachType(v8::Local<v8::Value> override_value, const std::string& op,
                                   bpf_attach_type* out) {
  if (!override_value->IsUndefined()) {
    std::string name;
    if (!ArgString(override_value, op, "attachType", &name)) return false;
    for (int type = 0; type < 128; type++) {
      const char* candidate = libbpf_bpf_attach_type_str(static_cast<bpf_attach_type>(type));
      if (candidate != nullptr && name == candidate) {
        *out = static_cast<bpf_attach_type>(type);
        return true;
      }
    }
    ThrowArgError(op, "attachType '" + name + "' is not a known attach type");
    return false;
  }
  // A program loaded from an object knows its section's attach type; a pinned one may not.
  if (attach_type_ >= 0 && !(attach_type_ == 0 && type_ != BPF_PROG_TYPE_CGROUP_SKB)) {
    *out = static_cast<bpf_attach_type>(attach_type_);
    return true;
  }
  switch (type_) {
    case BPF_PROG_TYPE_SOCK_OPS:
      *out = BPF_CGROUP_SOCK_OPS;
      return true;
    case BPF_PROG_TYPE_SK_MSG:
      *out = BPF_SK_MSG_VERDICT;
      return true;
    case BPF_PROG_TYPE_XDP:
      *out = BPF_XDP;
      return true;
    default:
      break;
  }
  ThrowArgError(op, "the attach type of program '" + name_ +
                        "' is unknown (opened from a pin?): pass attachType");
  return false;
}

#define PROG_SELF(op)                                             \
  ProgHandle* self = ObjectWrap::Unwrap<ProgHandle>(info.This()); \
  if (!self->CheckOpen(op)) return

NAN_METHOD(ProgHandle::Fd) {
  info.GetReturnValue().Set(ObjectWrap::Unwrap<ProgHandle>(info.This())->fd_);
}

NAN_METHOD(ProgHandle::Info) {
  PROG_SELF("bpf_obj_get_info_by_fd");
  bpf_prog_info prog_info;
  if (!GetProgInfo(self->fd_, &prog_info)) return ThrowBpfError("bpf_obj_get_info_by_fd", errno);
  char tag[BPF_TAG_SIZE * 2 + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + i * 2, 3, "%02x", prog_info.tag[i]);
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "id", prog_info.id);
  SetProp(out, "name", self->name_);
  SetProp(out, "kernelName", std::string(prog_info.name));
  SetProp(out, "type", ProgTypeName(prog_info.type));
  SetProp(out, "typeId", prog_info.type);
  SetProp(out, "section", self->section_);
  SetProp(out, "attachType", AttachTypeName(self->attach_type_));
  SetProp(out, "tag", std::string(tag));
  info.GetReturnValue().Set(out);
}

// attachCgroup(path, attachType?) -> LinkHandle
NAN_METHOD(ProgHandle::AttachCgroup) {
  const std::string op = "bpf_link_create";
  PROG_SELF(op);
  std::string path;
  if (!ArgString(info[0], "attachCgroup", "cgroupPath", &path)) return;
  bpf_attach_type type;
  if (!self->ResolveAttachType(info[1], "attachCgroup", &type)) return;
  FdGuard cgroup(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cgroup.get() < 0) return ThrowBpfError("open cgroup", errno, "", path);
  int fd = bpf_link_create(self->fd_, cgroup.get(), type, nullptr);
  if (fd < 0) {
    return ThrowBpfError(op, errno, "", AttachTypeName(type) + " on " + path);
  }
  info.GetReturnValue().Set(LinkHandle::WrapLink(fd, ""));
}

// attachXdp(ifindex, mode 'auto' | 'native' | 'generic', netnsPath?) -> LinkHandle with mode
NAN_METHOD(ProgHandle::AttachXdp) {
  const std::string op = "bpf_link_create";
  PROG_SELF(op);
  uint32_t ifindex = 0;
  if (!ArgUint32(info[0], "attachXdp", "ifindex", &ifindex)) return;
  if (ifindex == 0) return ThrowArgError("attachXdp", "ifindex must be positive");
  std::string mode = "auto";
  if (!info[1]->IsUndefined() && !ArgString(info[1], "attachXdp", "mode", &mode)) return;
  if (mode != "auto" && mode != "native" && mode != "generic") {
    return ThrowArgError("attachXdp",
                         "mode must be 'auto', 'native' or 'generic', got '" + mode + "'");
  }
  std::string netns;
  if (!info[2]->IsUndefined() && !ArgString(info[2], "attachXdp", "netnsPath", &netns)) return;
  int fd = -1, err = 0;
  std::string got;
  bool ok = InNetns(netns, "attachXdp", [&]() {
    char ifname[IF_NAMESIZE];
    if (if_indextoname(ifindex, ifname) == nullptr) {
      err = ENODEV;  // the kernel would say EINVAL
      got = "lookup";
      return;
    }
    if (mode != "generic") {
      LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = XDP_FLAGS_DRV_MODE);
      fd = bpf_link_create(self->fd_, static_cast<int>(ifindex), BPF_XDP, &opts);
      err = errno;
      got = "native";
      // auto: fall back to generic only when the driver lacks native XDP.
      if (fd >= 0 || mode == "native" || (err != EOPNOTSUPP && err != 524)) return;
    }
    LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = XDP_FLAGS_SKB_MODE);
    fd = bpf_link_create(self->fd_, static_cast<int>(ifindex), BPF_XDP, &opts);
    err = errno;
    got = "generic";
  });
  if (!ok) {
    if (fd >= 0) close(fd);
    return;
  }
  if (fd < 0) {
    if (got == "lookup") {
      return ThrowBpfError("if_indextoname", err, "", "no interface " + std::to_string(ifindex));
    }
    return ThrowBpfError(op, err, "", "xdp (" + mode + ") on ifindex " + std::to_string(ifindex));
  }
  info.GetReturnValue().Set(LinkHandle::WrapLink(fd, got));
}

// attachSockmap(map, attachType?, method 'auto' | 'link' | 'prog_attach') -> LinkHandle; auto makes
// a bpf_link when the kernel has sockmap links (6.10+), else a legacy bpf_prog_attach.
NAN_METHOD(ProgHandle::AttachSockmap) {
  PROG_SELF("attachSockmap");
  MapHandle* map = MapHandle::Unwrap(info[0], "attachSockmap");
  if (map == nullptr) return;
  bpf_attach_type type;
  if (!self->ResolveAttachType(info[1], "attachSockmap", &type)) return;
  std::string method = "auto";
  if (!info[2]->IsUndefined() && !ArgString(info[2], "attachSockmap", "method", &method)) return;
  if (method != "auto" && method != "link" && method != "prog_attach") {
    return ThrowArgError("attachSockmap",
                         "method must be 'auto', 'link' or 'prog_attach', got '" + method + "'");
  }
  if (method != "prog_attach") {
    int fd = bpf_link_create(self->fd_, map->fd(), type, nullptr);
    if (fd >= 0) return info.GetReturnValue().Set(LinkHandle::WrapLink(fd, ""));
    int err = errno;
    if (method == "link" || (err != EINVAL && err != EOPNOTSUPP && err != 524)) {
      return ThrowBpfError("bpf_link_create", err, "", AttachTypeName(type));
    }
  }
  if (bpf_prog_attach(self->fd_, map->fd(), type, 0) != 0) {
    return ThrowBpfError("bpf_prog_attach", errno, "", AttachTypeName(type));
  }
  int prog_fd = DupFd(self->fd_);
  int map_fd = DupFd(map->fd());
  if (prog_fd < 0 || map_fd < 0) {
    int err = errno;
    bpf_prog_detach2(self->fd_, map->fd(), type);
    if (prog_fd >= 0) close(prog_fd);
    if (map_fd >= 0) close(map_fd);
    return ThrowBpfError("dup", err);
  }
  info.GetReturnValue().Set(LinkHandle::WrapProgAttach(prog_fd, map_fd, type));
}

// attachIter() -> LinkHandle for an iterator program (no parameters: task, tcp, udp, bpf_map, ...)
NAN_METHOD(ProgHandle::AttachIter) {
  PROG_SELF("bpf_link_create");
  int fd = bpf_link_create(self->fd_, 0, BPF_TRACE_ITER, nullptr);
  if (fd < 0) return ThrowBpfError("bpf_link_create", errno, "", "iterator");
  info.GetReturnValue().Set(LinkHandle::WrapLink(fd, ""));
}

// testRun({ data?, dataOutSize?, ctx?, ctxOutSize?, repeat?, flags?, cpu?, batchSize? }) ->
// { retval, durationNs, dataOut, ctxOut? }. flags/cpu/batchSize go to the kernel as given: it
// decides which program types take them (XDP: BPF_F_TEST_XDP_LIVE_FRAMES and batchSize; cpu: raw
// tracepoints).
NAN_METHOD(ProgHandle::TestRun) {
  const std::string op = "bpf_prog_test_run_opts";
  PROG_SELF(op);
  v8::Local<v8::Object> options = Nan::New<v8::Object>();
  if (!info[0]->IsUndefined()) {
    if (!info[0]->IsObject()) return ThrowArgError(op, "options must be an object");
    options = info[0].As<v8::Object>();
  }
  char *data = nullptr, *ctx = nullptr;
  size_t data_length = 0, ctx_length = 0;
  uint32_t data_out_size = 0, ctx_out_size = 0, repeat = 1, flags = 0, cpu = 0, batch_size = 0;
  bool has_data = false, has_ctx = false, has_out = false, has_ctx_out = false, has_repeat = false;
  bool present = false;
  if (!OptBuffer(options, "data", op, &data, &data_length, &has_data)) return;
  if (!OptBuffer(options, "ctx", op, &ctx, &ctx_length, &has_ctx)) return;
  if (!OptUint32(options, "dataOutSize", op, &data_out_size, &has_out)) return;
  if (!OptUint32(options, "ctxOutSize", op, &ctx_out_size, &has_ctx_out)) return;
  if (!OptUint32(options, "repeat", op, &repeat, &has_repeat)) return;
  if (!OptUint32(options, "flags", op, &flags, &present)) return;
  if (!OptUint32(options, "cpu", op, &cpu, &present)) return;
  if (!OptUint32(options, "batchSize", op, &batch_size, &present)) return;
  if (!has_out) data_out_size = has_data ? static_cast<uint32_t>(data_length) + 256 : 0;
  // Live XDP frames are transmitted, not copied back: the kernel refuses data_out then.
  if (flags & BPF_F_TEST_XDP_LIVE_FRAMES) data_out_size = 0;
  if (!has_ctx_out && has_ctx) ctx_out_size = static_cast<uint32_t>(ctx_length);
  std::vector<char> data_out(data_out_size), ctx_out(ctx_out_size);
  LIBBPF_OPTS(bpf_test_run_opts, opts);
  if (has_data) {
    opts.data_in = data;
    opts.data_size_in = static_cast<uint32_t>(data_length);
  }
  if (data_out_size > 0) {
    opts.data_out = data_out.data();
    opts.data_size_out = data_out_size;
  }
  if (has_ctx) {
    opts.ctx_in = ctx;
    opts.ctx_size_in = static_cast<uint32_t>(ctx_length);
  }
  if (ctx_out_size > 0) {
    opts.ctx_out = ctx_out.data();
    opts.ctx_size_out = ctx_out_size;
  }
  opts.repeat = static_cast<int>(repeat);
  opts.flags = flags;
  opts.cpu = cpu;
  opts.batch_size = batch_size;
  if (bpf_prog_test_run_opts(self->fd_, &opts) != 0) return ThrowBpfError(op, errno);
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "retval", opts.retval);
  SetProp(out, "durationNs", opts.duration);
  SetProp(out, "dataOut", CopyBuffer(data_out.data(), std::min(opts.data_size_out, data_out_size)));
  if (ctx_out_size > 0) {
    SetProp(out, "ctxOut", CopyBuffer(ctx_out.data(), std::min(opts.ctx_size_out, ctx_out_size)));
  }
  info.GetReturnValue().Set(out);
}

NAN_METHOD(ProgHandle::Pin) {
  PROG_SELF("bpf_obj_pin");
  PinFd(self->fd_, info[0]);
}

NAN_METHOD(ProgHandle::CloseMethod) { ObjectWrap::Unwrap<ProgHandle>(info.This())->Close(); }

// openPinnedProgram(path) -> ProgHandle (attach type unknown: inferred from the type or given)
NAN_METHOD(OpenPinnedProgram) {
  int fd = OpenPinnedOfKind(info[0], "prog", "a program");
  if (fd < 0) return;
  v8::Local<v8::Value> handle = ProgHandle::Make(fd, "", "", -1, "openPinnedProgram");
  if (!handle.IsEmpty()) info.GetReturnValue().Set(handle);
}

// ---- LinkHandle ---------------------------------------------------------------------------------

NAN_MODULE_INIT(LinkHandle::Init) {
  v8::Local<v8::FunctionTemplate> tpl = Nan::New<v8::FunctionTemplate>(New);
  tpl->SetClassName(Nan::New("BpfLinkHandle").ToLocalChecked());
  tpl->InstanceTemplate()->SetInternalFieldCount(1);
  Nan::SetPrototypeMethod(tpl, "fd", Fd);
  Nan::SetPrototypeMethod(tpl, "info", Info);
  Nan::SetPrototypeMethod(tpl, "pin", Pin);
  Nan::SetPrototypeMethod(tpl, "update", Update);
  Nan::SetPrototypeMethod(tpl, "detach", Detach);
  Nan::SetPrototypeMethod(tpl, "close", CloseMethod);
  template_.Reset(tpl);
  constructor_.Reset(Nan::GetFunction(tpl).ToLocalChecked());
}

NAN_METHOD(LinkHandle::New) {
  if (!info.IsConstructCall()) return ThrowArgError("BpfLinkHandle", "use new");
  (new LinkHandle())->Wrap(info.This());
  info.GetReturnValue().Set(info.This());
}

v8::Local<v8::Value> LinkHandle::WrapLink(int fd, const std::string& mode) {
  v8::Local<v8::Object> handle;
  if (!Nan::NewInstance(Nan::New(constructor_)).ToLocal(&handle)) {
    close(fd);
    return v8::Local<v8::Value>();
  }
  LinkHandle* self = ObjectWrap::Unwrap<LinkHandle>(handle);
  self->fd_ = fd;
  self->mode_ = mode;
  return handle;
}

v8::Local<v8::Value> LinkHandle::WrapProgAttach(int prog_fd, int target_fd, bpf_attach_type type) {
  v8::Local<v8::Object> handle;
  if (!Nan::NewInstance(Nan::New(constructor_)).ToLocal(&handle)) {
    bpf_prog_detach2(prog_fd, target_fd, type);
    close(prog_fd);
    close(target_fd);
    return v8::Local<v8::Value>();
  }
  LinkHandle* self = ObjectWrap::Unwrap<LinkHandle>(handle);
  self->legacy_ = true;
  self->fd_ = prog_fd;  // reported as the link's fd; the attachment itself has none
  self->prog_fd_ = prog_fd;
  self->target_fd_ = target_fd;
  self->attach_type_ = type;
  self->attached_ = true;
  return handle;
}

LinkHandle* LinkHandle::Unwrap(v8::Local<v8::Value> value, const std::string& op) {
  if (!Nan::New(template_)->HasInstance(value)) {
    ThrowArgError(op, "expected a link handle");
    return nullptr;
  }
  LinkHandle* link = ObjectWrap::Unwrap<LinkHandle>(value.As<v8::Object>());
  return link->CheckOpen(op) ? link : nullptr;
}

LinkHandle::~LinkHandle() { Close(); }

void LinkHandle::Close() {
  if (legacy_) {
    // Like closing an unpinned bpf_link: the attachment goes away with the handle.
    if (attached_) bpf_prog_detach2(prog_fd_, target_fd_, attach_type_);
    attached_ = false;
    if (prog_fd_ >= 0) close(prog_fd_);
    if (target_fd_ >= 0) close(target_fd_);
    prog_fd_ = target_fd_ = fd_ = -1;
    return;
  }
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool LinkHandle::CheckOpen(const std::string& op) {
  if (fd_ >= 0) return true;
  ThrowBpfError(op, EBADF, "", "link is closed");
  return false;
}

#define LINK_SELF(op)                                             \
  LinkHandle* self = ObjectWrap::Unwrap<LinkHandle>(info.This()); \
  if (!self->CheckOpen(op)) return

NAN_METHOD(LinkHandle::Fd) {
  info.GetReturnValue().Set(ObjectWrap::Unwrap<LinkHandle>(info.This())->fd_);
}

// info() -> { kind: 'link' | 'prog_attach', id, type, progId, mode }
NAN_METHOD(LinkHandle::Info) {
  LINK_SELF("bpf_obj_get_info_by_fd");
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "kind", std::string(self->legacy_ ? "prog_attach" : "link"));
  SetProp(out, "mode", self->mode_);
  if (self->legacy_) {
    bpf_prog_info prog_info;
    if (!GetProgInfo(self->prog_fd_, &prog_info)) {
      return ThrowBpfError("bpf_obj_get_info_by_fd", errno);
    }
    SetProp(out, "id", 0);
    SetProp(out, "type", AttachTypeName(self->attach_type_));
    SetProp(out, "progId", prog_info.id);
    SetProp(out, "attached", Nan::New(self->attached_));
  } else {
    bpf_link_info link_info;
    memset(&link_info, 0, sizeof(link_info));
    uint32_t length = sizeof(link_info);
    if (bpf_obj_get_info_by_fd(self->fd_, &link_info, &length) != 0) {
      return ThrowBpfError("bpf_obj_get_info_by_fd", errno);
    }
    const char* type = libbpf_bpf_link_type_str(static_cast<bpf_link_type>(link_info.type));
    SetProp(out, "id", link_info.id);
    SetProp(out, "type", std::string(type != nullptr ? type : "unknown"));
    SetProp(out, "progId", link_info.prog_id);
    // A detached link keeps its fd; cgroup and XDP links then report no target.
    bool attached = link_info.prog_id != 0;
    if (link_info.type == BPF_LINK_TYPE_CGROUP)
      attached = attached && link_info.cgroup.cgroup_id != 0;
    if (link_info.type == BPF_LINK_TYPE_XDP) attached = attached && link_info.xdp.ifindex != 0;
    SetProp(out, "attached", Nan::New(attached));
  }
  info.GetReturnValue().Set(out);
}

NAN_METHOD(LinkHandle::Pin) {
  LINK_SELF("bpf_obj_pin");
  if (self->legacy_) {
    return ThrowBpfError("bpf_obj_pin", EOPNOTSUPP, "",
                         "a prog_attach attachment is not a bpf_link and cannot be pinned");
  }
  PinFd(self->fd_, info[0]);
}

// update(program): replaces the program atomically (links) or re-attaches (prog_attach).
NAN_METHOD(LinkHandle::Update) {
  LINK_SELF("bpf_link_update");
  ProgHandle* prog = ProgHandle::Unwrap(info[0], "bpf_link_update");
  if (prog == nullptr) return;
  if (!self->legacy_) {
    if (bpf_link_update(self->fd_, prog->fd(), nullptr) != 0) {
      return ThrowBpfError("bpf_link_update", errno);
    }
    return;
  }
  // sockmap attachments replace the previous program of the same type in place.
  int new_fd = DupFd(prog->fd());
  if (new_fd < 0) return ThrowBpfError("dup", errno);
  if (bpf_prog_attach(new_fd, self->target_fd_, self->attach_type_, 0) != 0) {
    int err = errno;
    close(new_fd);
    return ThrowBpfError("bpf_prog_attach", err);
  }
  close(self->prog_fd_);
  self->prog_fd_ = self->fd_ = new_fd;
  self->attached_ = true;
}

NAN_METHOD(LinkHandle::Detach) {
  LINK_SELF("bpf_link_detach");
  if (self->legacy_) {
    if (self->attached_ && bpf_prog_detach2(self->prog_fd_, self->target_fd_, self->attach_type_)) {
      return ThrowBpfError("bpf_prog_detach2", errno);
    }
    self->attached_ = false;
    return;
  }
  if (bpf_link_detach(self->fd_) != 0) return ThrowBpfError("bpf_link_detach", errno);
}

NAN_METHOD(LinkHandle::CloseMethod) { ObjectWrap::Unwrap<LinkHandle>(info.This())->Close(); }

// openPinnedLink(path) -> LinkHandle
NAN_METHOD(OpenPinnedLink) {
  int fd = OpenPinnedOfKind(info[0], "link", "a link");
  if (fd < 0) return;
  info.GetReturnValue().Set(LinkHandle::WrapLink(fd, ""));
}

// runIter(link) -> Buffer with everything the iterator wrote.
NAN_METHOD(RunIter) {
  LinkHandle* link = LinkHandle::Unwrap(info[0], "bpf_iter_create");
  if (link == nullptr) return;
  if (!link->is_link()) return ThrowArgError("bpf_iter_create", "not an iterator link");
  FdGuard iter(bpf_iter_create(link->fd()));
  if (iter.get() < 0) return ThrowBpfError("bpf_iter_create", errno);
  std::vector<char> out;
  char chunk[16384];
  constexpr size_t kMaxOutput = 256u << 20;
  for (;;) {
    ssize_t n = read(iter.get(), chunk, sizeof(chunk));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ThrowBpfError("read iterator", errno);
    }
    if (n == 0) break;
    out.insert(out.end(), chunk, chunk + n);
    if (out.size() > kMaxOutput) return ThrowBpfError("read iterator", E2BIG, "", "over 256 MiB");
  }
  info.GetReturnValue().Set(CopyBuffer(out.data(), out.size()));
}

}  // namespace sluice
