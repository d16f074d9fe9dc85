// Shared helpers of the sluice BPF addon: error objects, argument checks, libbpf log capture and
// the handle classes (each owns one kernel fd and releases it on close() or when garbage
// collected).
#ifndef SLUICE_NATIVE_COMMON_H_
#define SLUICE_NATIVE_COMMON_H_

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <nan.h>

#include <cstdint>
#include <string>

namespace sluice {

// ---- errors -------------------------------------------------------------------------------------

// errno name for a positive errno ("ENOENT"; kernel-internal ones such as 524 -> "ENOTSUPP").
std::string ErrnoName(int err);

// Throws a BpfError (the class registered by setErrorClass, else Error) with code, errno, op and
// optionally the libbpf/verifier log.
void ThrowBpfError(const std::string& op, int err, const std::string& log = "",
                   const std::string& detail = "");

// Throws a TypeError for a bad argument: code 'EINVAL', errno 22, op, and a message naming the
// field.
void ThrowArgError(const std::string& op, const std::string& message);

// The class used for errors; set once from JS (native/index.ts).
NAN_METHOD(SetErrorClass);

// ---- libbpf log capture -------------------------------------------------------------------------

// Installs the libbpf print callback: output is collected (not printed) so errors can carry it;
// SLUICE_LIBBPF_DEBUG=1 also echoes it, debug level included, to stderr.
void InstallLibbpfPrint();

// Collects libbpf messages printed while it is alive.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  std::string Text() const;

 private:
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
};

// ---- argument helpers ---------------------------------------------------------------------------

// Each returns false after throwing a TypeError naming `field`.
bool ArgString(v8::Local<v8::Value> value, const std::string& op, const std::string& field,
               std::string* out);
bool ArgUint32(v8::Local<v8::Value> value, const std::string& op, const std::string& field,
               uint32_t* out);
bool ArgBuffer(v8::Local<v8::Value> value, const std::string& op, const std::string& field,
               char** data, size_t* length);
// Reads an optional property of an options object; false only after throwing.
bool OptString(v8::Local<v8::Object> obj, const char* key, const std::string& op, std::string* out,
               bool* present);
bool OptUint32(v8::Local<v8::Object> obj, const char* key, const std::string& op, uint32_t* out,
               bool* present);
bool OptBuffer(v8::Local<v8::Object> obj, const char* key, const std::string& op, char** data,
               size_t* length, bool* present);

// Map update flags from 'any' | 'noexist' | 'exist' (undefined = 'any').
bool ArgUpdateFlags(v8::Local<v8::Value> value, const std::string& op, uint64_t* flags);

// Sets obj[key] = value.
void SetProp(v8::Local<v8::Object> obj, const char* key, v8::Local<v8::Value> value);
void SetProp(v8::Local<v8::Object> obj, const char* key, const std::string& value);
void SetProp(v8::Local<v8::Object> obj, const char* key, double value);

// Copies bytes into a new Buffer.
v8::Local<v8::Object> CopyBuffer(const void* data, size_t length);

// What a bpf fd refers to: "map", "prog", "link" or "" (from /proc/self/fdinfo).
std::string FdKind(int fd);

// A CLOEXEC duplicate of fd (libbpf owns the original), or -1 with errno set.
int DupFd(int fd);

// Opens the pin at the path in `arg` and checks it is a `kind` ("map", "prog", "link"); returns the
// fd, or -1 after throwing (ENOENT for a missing pin, EINVAL naming the path for the wrong kind).
int OpenPinnedOfKind(v8::Local<v8::Value> arg, const std::string& kind, const std::string& noun);

// Pins fd at the path in `arg` (bpf_obj_pin); false after throwing.
bool PinFd(int fd, v8::Local<v8::Value> arg);

// ---- handles ------------------------------------------------------------------------------------

// A map fd plus its cached geometry (so argument sizes are checked without a syscall).
class MapHandle : public Nan::ObjectWrap {
 public:
  static NAN_MODULE_INIT(Init);
  // Wraps an fd (takes ownership). Returns an empty handle after throwing.
  static v8::Local<v8::Value> Make(int fd, const std::string& op);
  static MapHandle* Unwrap(v8::Local<v8::Value> value, const std::string& op);

  int fd() const { return fd_; }
  uint32_t type() const { return type_; }
  uint32_t key_size() const { return key_size_; }
  // Bytes of one value as user space sees it (per-CPU maps: rounded up to 8, times possible CPUs).
  uint32_t value_bytes() const { return value_bytes_; }

 private:
  MapHandle() = default;
  ~MapHandle() override;
  void Close();
  bool CheckOpen(const std::string& op);

  static NAN_METHOD(New);
  static NAN_METHOD(Fd);
  static NAN_METHOD(Info);
  static NAN_METHOD(Lookup);
  static NAN_METHOD(Update);
  static NAN_METHOD(Delete);
  static NAN_METHOD(Keys);
  static NAN_METHOD(UpdateBatch);
  static NAN_METHOD(LookupBatch);
  static NAN_METHOD(DeleteBatch);
  static NAN_METHOD(Pin);
  static NAN_METHOD(CloseMethod);

  static Nan::Persistent<v8::Function> constructor_;
  static Nan::Persistent<v8::FunctionTemplate> template_;
  int fd_ = -1;
  uint32_t type_ = 0;
  uint32_t key_size_ = 0;
  uint32_t value_size_ = 0;
  uint32_t value_bytes_ = 0;
  uint32_t max_entries_ = 0;
  bool per_cpu_ = false;
};

// A program fd with the attach type it was built for (from its ELF section).
class ProgHandle : public Nan::ObjectWrap {
 public:
  static NAN_MODULE_INIT(Init);
  // Wraps an fd (takes ownership). attach_type < 0: unknown (inferred from the program type).
  static v8::Local<v8::Value> Make(int fd, const std::string& name, const std::string& section,
                                   int attach_type, const std::string& op);
  static ProgHandle* Unwrap(v8::Local<v8::Value> value, const std::string& op);
  int fd() const { return fd_; }

 private:
  ProgHandle() = default;
  ~ProgHandle() override;
  void Close();
  bool CheckOpen(const std::string& op);
  // The attach type for a hook: the override, else the section's, else one implied by the type.
  bool ResolveAttachType(v8::Local<v8::Value> override_value, const std::string& op,
                         bpf_attach_type* out);

  static NAN_METHOD(New);
  static NAN_METHOD(Fd);
  static NAN_METHOD(Info);
  static NAN_METHOD(AttachCgroup);
  static NAN_METHOD(AttachXdp);
  static NAN_METHOD(AttachSockmap);
  static NAN_METHOD(AttachIter);
  static NAN_METHOD(TestRun);
  static NAN_METHOD(Pin);
  static NAN_METHOD(CloseMethod);

  static Nan::Persistent<v8::Function> constructor_;
  static Nan::Persistent<v8::FunctionTemplate> template_;
  int fd_ = -1;
  uint32_t type_ = 0;
  int attach_type_ = -1;
  std::string name_;
  std::string section_;
};

// A bpf_link fd, or (kind "prog_attach") a legacy attachment made with bpf_prog_attach that behaves
// like a link: detach()/close()/GC call bpf_prog_detach2.
class LinkHandle : public Nan::ObjectWrap {
 public:
  static NAN_MODULE_INIT(Init);
  // A real bpf_link (takes ownership of fd).
  static v8::Local<v8::Value> WrapLink(int fd, const std::string& mode);
  // A legacy attachment (takes ownership of both fds).
  static v8::Local<v8::Value> WrapProgAttach(int prog_fd, int target_fd, bpf_attach_type type);
  static LinkHandle* Unwrap(v8::Local<v8::Value> value, const std::string& op);
  int fd() const { return fd_; }
  bool is_link() const { return !legacy_; }

 private:
  LinkHandle() = default;
  ~LinkHandle() override;
  void Close();
  bool CheckOpen(const std::string& op);

  static NAN_METHOD(New);
  static NAN_METHOD(Fd);
  static NAN_METHOD(Info);
  static NAN_METHOD(Pin);
  static NAN_METHOD(Update);
  static NAN_METHOD(Detach);
  static NAN_METHOD(CloseMethod);

  static Nan::Persistent<v8::Function> constructor_;
  static Nan::Persistent<v8::FunctionTemplate> template_;
  int fd_ = -1;
  bool legacy_ = false;
  int prog_fd_ = -1;
  int target_fd_ = -1;
  bpf_attach_type attach_type_ = BPF_CGROUP_INET_INGRESS;
  bool attached_ = false;
  std::string mode_;
};

// A loaded bpf_object; programs and maps are handed out as handles on duplicated fds.
class ObjectHandle : public Nan::ObjectWrap {
 public:
  static NAN_MODULE_INIT(Init);
  static NAN_METHOD(Load);

 private:
  ObjectHandle() = default;
  ~ObjectHandle() override;
  void Close();

  static NAN_METHOD(New);
  static NAN_METHOD(Programs);
  static NAN_METHOD(Maps);
  static NAN_METHOD(CloseMethod);

  static Nan::Persistent<v8::Function> constructor_;
  bpf_object* obj_ = nullptr;
};

// Free functions (map.cc / prog.cc).
NAN_METHOD(CreateMap);
NAN_METHOD(OpenPinnedMap);
NAN_METHOD(OpenPinnedProgram);
NAN_METHOD(OpenPinnedLink);
NAN_METHOD(RunIter);
NAN_METHOD(PossibleCpus);
NAN_METHOD(MapTypes);

}  // namespace sluice

#endif  // SLUICE_NATIVE_COMMON_H_
