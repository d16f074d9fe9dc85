#include "common.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sluice {

namespace {

Nan::Persistent<v8::Function> error_class;

// libbpf output collected while a LogCapture is alive (bounded: the tail is kept).
constexpr size_t kMaxLog = 8 << 20;
std::string captured_log;
int capture_depth = 0;
bool debug_echo = false;

int PrintCallback(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG && !debug_echo) return 0;
  va_list copy;
  va_copy(copy, args);
  int needed = vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (needed <= 0) return 0;
  std::string text(static_cast<size_t>(needed) + 1, '\0');
  vsnprintf(&text[0], text.size(), format, args);
  text.resize(static_cast<size_t>(needed));
  if (debug_echo) fputs(text.c_str(), stderr);
  if (capture_depth > 0) {
    captured_log += text;
    if (captured_log.size() > kMaxLog) captured_log.erase(0, captured_log.size() - kMaxLog);
  }
  return needed;
}

}  // namespace

std::string ErrnoName(int err) {
  switch (err) {
    case 512:
      return "ERESTARTSYS";
    case 524:
      return "ENOTSUPP";
    default:
      break;
  }
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "E" + std::to_string(err);
}

static std::string ErrnoMessage(int err) {
  if (err == 524) return "Operation not supported for this map or program type";
  return strerror(err);
}

void ThrowBpfError(const std::string& op, int err, const std::string& log,
                   const std::string& detail) {
  if (err < 0) err = -err;
  if (err == 0) err = EINVAL;
  std::string message = op + ": " + ErrnoMessage(err) + " (" + ErrnoName(err) + ")";
  if (!detail.empty()) message += ": " + detail;
  v8::Local<v8::Object> error;
  if (!error_class.IsEmpty()) {
    v8::Local<v8::Value> argv[] = {Nan::New(message).ToLocalChecked()};
    Nan::MaybeLocal<v8::Object> made = Nan::NewInstance(Nan::New(error_class), 1, argv);
    if (made.IsEmpty()) return;  // the constructor threw; that exception propagates
    error = made.ToLocalChecked();
  } else {
    error = Nan::Error(message.c_str()).As<v8::Object>();
  }
  SetProp(error, "code", ErrnoName(err));
  SetProp(error, "errno", err);
  SetProp(error, "op", op);
  if (!log.empty()) SetProp(error, "log", log);
  Nan::ThrowError(error.As<v8::Value>());
}

void ThrowArgError(const std::string& op, const std::string& message) {
  v8::Local<v8::Object> error = Nan::TypeError((op + ": " + message).c_str()).As<v8::Object>();
  SetProp(error, "code", std::string("EINVAL"));
  SetProp(error, "errno", EINVAL);
  SetProp(error, "op", op);
  Nan::ThrowError(error.As<v8::Value>());
}

NAN_METHOD(SetErrorClass) {
  if (!info[0]->IsFunction()) return ThrowArgError("setErrorClass", "expected a constructor");
  error_class.Reset(info[0].As<v8::Function>());
}

void InstallLibbpfPrint() {
  const char* env = getenv("SLUICE_LIBBPF_DEBUG");
  debug_echo = env != nullptr && env[0] == '1';
  libbpf_set_print(PrintCallback);
}

LogCapture::LogCapture() {
  if (capture_depth++ == 0) captured_log.clear();
}

LogCapture::~LogCapture() { capture_depth--; }

std::string LogCapture::Text() const { return captured_log; }

bool ArgString(v8::Local<v8::Value> value, const std::string& op, const std::string& field,
               std::string* out) {
  if (!value->IsString()) {
    ThrowArgError(op, field + " must be a string");
    return false;
  }
  Nan::Utf8String text(value);
  *out = std::string(*text, static_cast<size_t>(text.length()));
  if (out->find('\0') != std::string::npos) {
    ThrowArgError(op, field + " must not contain NUL");
    return false;
  }
  return true;
}

bool ArgUint32(v8::Local<v8::Value> value, const std::string& op, const std::string& field,
               uint32_t* out) {
  if (!value->IsNumber()) {
    ThrowArgError(op, field + " must be a number");
    return false;
  }
  double number = Nan::To<double>(value).FromJust();
  if (!(number >= 0 && number <= 4294967295.0) ||
      number != static_cast<double>(static_cast<uint64_t>(number))) {
    ThrowArgError(op, field + " must be an integer in [0, 2^32)");
    return false;
  }
  *out = static_cast<uint32_t>(number);
  return true;
}

bool ArgBuffer(v8::Local<v8::Value> value, const std::string& op, const std::string& field,
               char** data, size_t* length) {
  if (!node::Buffer::HasInstance(value)) {
    ThrowArgError(op, field + " must be a Buffer");
    return false;
  }
  *data = node::Buffer::Data(value);
  *length = node::Buffer::Length(value);
  return true;
}

static bool GetOpt(v8::Local<v8::Object> obj, const char* key, v8::Local<v8::Value>* out,
                   bool* present) {
  Nan::MaybeLocal<v8::Value> value = Nan::Get(obj, Nan::New(key).ToLocalChecked());
  if (value.IsEmpty()) return false;
  *out = value.ToLocalChecked();
  *present = !(*out)->IsUndefined() && !(*out)->IsNull();
  return true;
}

bool OptString(v8::Local<v8::Object> obj, const char* key, const std::string& op, std::string* out,
               bool* present) {
  v8::Local<v8::Value> value;
  if (!GetOpt(obj, key, &value, present)) return false;
  return !*present || ArgString(value, op, key, out);
}

bool OptUint32(v8::Local<v8::Object> obj, const char* key, const std::string& op, uint32_t* out,
               bool* present) {
  v8::Local<v8::Value> value;
  if (!GetOpt(obj, key, &value, present)) return false;
  return !*present || ArgUint32(value, op, key, out);
}

bool OptBuffer(v8::Local<v8::Object> obj, const char* key, const std::string& op, char** data,
               size_t* length, bool* present) {
  v8::Local<v8::Value> value;
  if (!GetOpt(obj, key, &value, present)) return false;
  return !*present || ArgBuffer(value, op, key, data, length);
}

bool ArgUpdateFlags(v8::Local<v8::Value> value, const std::string& op, uint64_t* flags) {
  if (value->IsUndefined()) {
    *flags = BPF_ANY;
    return true;
  }
  std::string name;
  if (!ArgString(value, op, "flag", &name)) return false;
  if (name == "any") {
    *flags = BPF_ANY;
  } else if (name == "noexist") {
    *flags = BPF_NOEXIST;
  } else if (name == "exist") {
    *flags = BPF_EXIST;
  } else {
    ThrowArgError(op, "flag must be 'any', 'noexist' or 'exist', got '" + name + "'");
    return false;
  }
  return true;
}

void SetProp(v8::Local<v8::Object> obj, const char* key, v8::Local<v8::Value> value) {
  Nan::Set(obj, Nan::New(key).ToLocalChecked(), value);
}

void SetProp(v8::Local<v8::Object> obj, const char* key, const std::string& value) {
  SetProp(obj, key, Nan::New(value).ToLocalChecked());
}

void SetProp(v8::Local<v8::Object> obj, const char* key, double value) {
  SetProp(obj, key, Nan::New(value));
}

v8::Local<v8::Object> CopyBuffer(const void* data, size_t length) {
  return Nan::CopyBuffer(static_cast<const char*>(data), static_cast<uint32_t>(length))
      .ToLocalChecked();
}

std::string FdKind(int fd) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
  FILE* file = fopen(path, "re");
  if (file == nullptr) return "";
  std::string kind;
  char line[256];
  while (kind.empty() && fgets(line, sizeof(line), file) != nullptr) {
    if (strncmp(line, "map_type:", 9) == 0) kind = "map";
    if (strncmp(line, "prog_type:", 10) == 0) kind = "prog";
    if (strncmp(line, "link_type:", 10) == 0) kind = "link";
  }
  fclose(file);
  return kind;
}

int DupFd(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 3); }

int OpenPinnedOfKind(v8::Local<v8::Value> arg, const std::string& kind, const std::string& noun) {
  std::string path;
  if (!ArgString(arg, "bpf_obj_get", "path", &path)) return -1;
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    ThrowBpfError("bpf_obj_get", errno, "", path);
    return -1;
  }
  if (FdKind(fd) != kind) {
    close(fd);
    ThrowBpfError("bpf_obj_get", EINVAL, "", path + " is not " + noun);
    return -1;
  }
  return fd;
}

bool PinFd(int fd, v8::Local<v8::Value> arg) {
  std::string path;
  if (!ArgString(arg, "bpf_obj_pin", "path", &path)) return false;
  if (bpf_obj_pin(fd, path.c_str()) != 0) {
    ThrowBpfError("bpf_obj_pin", errno, "", path);
    return false;
  }
  return true;
}

}  // namespace sluice
