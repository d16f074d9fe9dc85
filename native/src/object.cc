// bpf_object: open, configure (globals, map sizes, pin root, skipped programs), load, list, close.
#include <bpf/btf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "common.h"

namespace sluice {

Nan::Persistent<v8::Function> ObjectHandle::constructor_;

NAN_MODULE_INIT(ObjectHandle::Init) {
  v8::Local<v8::FunctionTemplate> tpl = Nan::New<v8::FunctionTemplate>(New);
  tpl->SetClassName(Nan::New("BpfObjectHandle").ToLocalChecked());
  tpl->InstanceTemplate()->SetInternalFieldCount(1);
  Nan::SetPrototypeMethod(tpl, "programs", Programs);
  Nan::SetPrototypeMethod(tpl, "maps", Maps);
  Nan::SetPrototypeMethod(tpl, "close", CloseMethod);
  constructor_.Reset(Nan::GetFunction(tpl).ToLocalChecked());
}

NAN_METHOD(ObjectHandle::New) {
  if (!info.IsConstructCall()) return ThrowArgError("BpfObjectHandle", "use new");
  (new ObjectHandle())->Wrap(info.This());
  info.GetReturnValue().Set(info.This());
}

ObjectHandle::~ObjectHandle() { Close(); }

void ObjectHandle::Close() {
  if (obj_ != nullptr) bpf_object__close(obj_);
  obj_ = nullptr;
}

namespace {

struct ObjectCloser {
  void operator()(bpf_object* obj) const { bpf_object__close(obj); }
};
using ObjectPtr = std::unique_ptr<bpf_object, ObjectCloser>;

bool EndsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Writes a global variable's initial value into the internal map (.rodata/.data/.bss) before load.
bool SetGlobal(bpf_object* obj, const std::string& name, const char* data, size_t length,
               const std::string& op) {
  const btf* types = bpf_object__btf(obj);
  if (types == nullptr) {
    ThrowBpfError(op, ENOENT, "", "object has no BTF, cannot find global '" + name + "'");
    return false;
  }
  uint32_t count = btf__type_cnt(types);
  for (uint32_t id = 1; id < count; id++) {
    const btf_type* sec = btf__type_by_id(types, id);
    if (!btf_is_datasec(sec)) continue;
    const btf_var_secinfo* vars = btf_var_secinfos(sec);
    for (uint16_t i = 0; i < btf_vlen(sec); i++) {
      const btf_type* var = btf__type_by_id(types, vars[i].type);
      if (name != btf__name_by_offset(types, var->name_off)) continue;
      std::string sec_name = btf__name_by_offset(types, sec->name_off);
      if (vars[i].size != length) {
        ThrowArgError(op, "globals." + name + " must be " + std::to_string(vars[i].size) +
                              " bytes, got " + std::to_string(length));
        return false;
      }
      bpf_map* map;
      bpf_object__for_each_map(map, obj) {
        if (!bpf_map__is_internal(map) || !EndsWith(bpf_map__name(map), sec_name)) continue;
        size_t size = 0;
        void* mem = const_cast<void*>(bpf_map__initial_value(map, &size));
        if (mem == nullptr || vars[i].offset + length > size) break;
        memcpy(static_cast<char*>(mem) + vars[i].offset, data, length);
        return true;
      }
      ThrowBpfError(op, ENOENT, "",
                    "no writable map for section " + sec_name + " of '" + name + "'");
      return false;
    }
  }
  ThrowBpfError(op, ENOENT, "", "no global variable named '" + name + "'");
  return false;
}

// Calls fn(name, value) for each own enumerable property of an options sub-object.
template <typename Fn>
bool ForEachProp(v8::Local<v8::Object> options, const char* key, const std::string& op, Fn fn) {
  v8::Local<v8::Value> value;
  if (!Nan::Get(options, Nan::New(key).ToLocalChecked()).ToLocal(&value)) return false;
  if (value->IsUndefined() || value->IsNull()) return true;
  if (!value->IsObject()) {
    ThrowArgError(op, std::string(key) + " must be an object");
    return false;
  }
  v8::Local<v8::Object> obj = value.As<v8::Object>();
  v8::Local<v8::Array> names;
  if (!Nan::GetOwnPropertyNames(obj).ToLocal(&names)) return false;
  for (uint32_t i = 0; i < names->Length(); i++) {
    v8::Local<v8::Value> prop = Nan::Get(names, i).ToLocalChecked();
    v8::Local<v8::Value> item;
    if (!Nan::Get(obj, prop).ToLocal(&item)) return false;
    Nan::Utf8String prop_name(prop);
    if (!fn(std::string(*prop_name), item)) return false;
  }
  return true;
}

// The verifier log inside libbpf's output, or all of it when there is no marked log.
std::string ExtractLoadLog(const std::string& text) {
  const std::string begin = "-- BEGIN PROG LOAD LOG --";
  const std::string end = "-- END PROG LOAD LOG --";
  size_t start = text.find(begin);
  if (start == std::string::npos) return text;
  start += begin.size();
  if (start < text.size() && text[start] == '\n') start++;
  size_t stop = text.find(end, start);
  std::string log =
      text.substr(start, stop == std::string::npos ? std::string::npos : stop - start);
  return log + "\n(libbpf)\n" + text;
}

}  // namespace

// load(path, { pinRoot?, globals?, mapMaxEntries?, skipPrograms? }) -> BpfObjectHandle
NAN_METHOD(ObjectHandle::Load) {
  const std::string op = "bpf_object__open_file";
  std::string path;
  if (!ArgString(info[0], "loadObject", "path", &path)) return;
  v8::Local<v8::Object> options = Nan::New<v8::Object>();
  if (!info[1]->IsUndefined()) {
    if (!info[1]->IsObject()) return ThrowArgError("loadObject", "options must be an object");
    options = info[1].As<v8::Object>();
  }
  std::string pin_root;
  bool has_pin_root = false;
  if (!OptString(options, "pinRoot", "loadObject", &pin_root, &has_pin_root)) return;

  LogCapture capture;
  LIBBPF_OPTS(bpf_object_open_opts, open_opts);
  if (has_pin_root) open_opts.pin_root_path = pin_root.c_str();
  errno = 0;
  ObjectPtr obj(bpf_object__open_file(path.c_str(), &open_opts));
  if (!obj) return ThrowBpfError(op, errno, capture.Text(), path);
  if (!has_pin_root) {
    // Without a pin root, maps declared as pinned by name stay unpinned: libbpf's implicit default
    // (/sys/fs/bpf) would share state between unrelated loads and leave pins behind.
    bpf_map* map;
    bpf_object__for_each_map(map, obj.get()) {
      if (bpf_map__pin_path(map) == nullptr) continue;
      int err = bpf_map__set_pin_path(map, nullptr);
      if (err != 0) return ThrowBpfError("bpf_map__set_pin_path", err, "", bpf_map__name(map));
    }
  }

  bool ok = ForEachProp(options, "mapMaxEntries", "loadObject",
                        [&](const std::string& name, v8::Local<v8::Value> value) {
                          uint32_t entries = 0;
                          if (!ArgUint32(value, "loadObject", "mapMaxEntries." + name, &entries))
                            return false;
                          bpf_map* map = bpf_object__find_map_by_name(obj.get(), name.c_str());
                          if (map == nullptr) {
                            ThrowBpfError("bpf_map__set_max_entries", ENOENT, "",
                                          "no map named '" + name + "'");
                            return false;
                          }
                          int err = bpf_map__set_max_entries(map, entries);
                          if (err != 0) ThrowBpfError("bpf_map__set_max_entries", err, "", name);
                          return err == 0;
                        });
  if (!ok) return;
  ok = ForEachProp(options, "globals", "loadObject",
                   [&](const std::string& name, v8::Local<v8::Value> value) {
                     char* data = nullptr;
                     size_t length = 0;
                     if (!ArgBuffer(value, "loadObject", "globals." + name, &data, &length))
                       return false;
                     return SetGlobal(obj.get(), name, data, length, "loadObject");
                   });
  if (!ok) return;

  v8::Local<v8::Value> skip;
  if (!Nan::Get(options, Nan::New("skipPrograms").ToLocalChecked()).ToLocal(&skip)) return;
  if (!skip->IsUndefined()) {
    if (!skip->IsArray()) return ThrowArgError("loadObject", "skipPrograms must be an array");
    v8::Local<v8::Array> names = skip.As<v8::Array>();
    for (uint32_t i = 0; i < names->Length(); i++) {
      std::string name;
      if (!ArgString(Nan::Get(names, i).ToLocalChecked(), "loadObject",
                     "skipPrograms[" + std::to_string(i) + "]", &name))
        return;
      bpf_program* prog = bpf_object__find_program_by_name(obj.get(), name.c_str());
      if (prog == nullptr) {
        return ThrowBpfError("bpf_program__set_autoload", ENOENT, "",
                             "no program named '" + name + "'");
      }
      int err = bpf_program__set_autoload(prog, false);
      if (err != 0) return ThrowBpfError("bpf_program__set_autoload", err, "", name);
    }
  }

  int err = bpf_object__load(obj.get());
  if (err != 0) return ThrowBpfError("bpf_object__load", err, ExtractLoadLog(capture.Text()), path);

  v8::Local<v8::Object> handle;
  if (!Nan::NewInstance(Nan::New(constructor_)).ToLocal(&handle)) return;
  Nan::ObjectWrap::Unwrap<ObjectHandle>(handle)->obj_ = obj.release();
  info.GetReturnValue().Set(handle);
}

// programs() -> [{ name, section, handle: ProgHandle }] for every loaded program.
NAN_METHOD(ObjectHandle::Programs) {
  ObjectHandle* self = Nan::ObjectWrap::Unwrap<ObjectHandle>(info.This());
  if (self->obj_ == nullptr) return ThrowBpfError("programs", EBADF, "", "object is closed");
  v8::Local<v8::Array> out = Nan::New<v8::Array>();
  uint32_t index = 0;
  bpf_program* prog;
  bpf_object__for_each_program(prog, self->obj_) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) continue;  // not loaded (skipped)
    int dup = DupFd(fd);
    if (dup < 0) return ThrowBpfError("dup", errno);
    v8::Local<v8::Value> handle =
        ProgHandle::Make(dup, bpf_program__name(prog), bpf_program__section_name(prog),
                         static_cast<int>(bpf_program__expected_attach_type(prog)), "programs");
    if (handle.IsEmpty()) return;
    v8::Local<v8::Object> item = Nan::New<v8::Object>();
    SetProp(item, "name", std::string(bpf_program__name(prog)));
    SetProp(item, "section", std::string(bpf_program__section_name(prog)));
    SetProp(item, "handle", handle);
    Nan::Set(out, index++, item);
  }
  info.GetReturnValue().Set(out);
}

// maps() -> [{ name, handle: MapHandle }] for every created map (internal .rodata/.bss included).
NAN_METHOD(ObjectHandle::Maps) {
  ObjectHandle* self = Nan::ObjectWrap::Unwrap<ObjectHandle>(info.This());
  if (self->obj_ == nullptr) return ThrowBpfError("maps", EBADF, "", "object is closed");
  v8::Local<v8::Array> out = Nan::New<v8::Array>();
  uint32_t index = 0;
  bpf_map* map;
  bpf_object__for_each_map(map, self->obj_) {
    int fd = bpf_map__fd(map);
    if (fd < 0) continue;
    int dup = DupFd(fd);
    if (dup < 0) return ThrowBpfError("dup", errno);
    v8::Local<v8::Value> handle = MapHandle::Make(dup, "maps");
    if (handle.IsEmpty()) return;
    v8::Local<v8::Object> item = Nan::New<v8::Object>();
    SetProp(item, "name", std::string(bpf_map__name(map)));
    SetProp(item, "handle", handle);
    Nan::Set(out, index++, item);
  }
  info.GetReturnValue().Set(out);
}

NAN_METHOD(ObjectHandle::CloseMethod) {
  Nan::ObjectWrap::Unwrap<ObjectHandle>(info.This())->Close();
}

}  // namespace sluice
