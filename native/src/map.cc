// Maps: element and batch operations on a map fd, map info, pinning, creation, pinned-map opening.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common.h"

namespace sluice {

Nan::Persistent<v8::Function> MapHandle::constructor_;
Nan::Persistent<v8::FunctionTemplate> MapHandle::template_;

namespace {

bool IsPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

std::string MapTypeName(uint32_t type) {
  const char* name = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(type));
  return name != nullptr ? name : "unknown(" + std::to_string(type) + ")";
}

// A batch argument: one Buffer of `count` fixed-size records back to back (the caller packs them,
// so a batch of 100 000 entries crosses into C++ as one object, not 100 000).
bool ArgPacked(v8::Local<v8::Value> value, const std::string& op, const std::string& field,
               size_t item_size, uint32_t count, char** data) {
  size_t length = 0;
  if (!ArgBuffer(value, op, field, data, &length)) return false;
  size_t want = static_cast<size_t>(count) * item_size;
  if (length != want) {
    ThrowArgError(op, field + " must be " + std::to_string(count) + " x " +
                          std::to_string(item_size) + " = " + std::to_string(want) +
                          " bytes, got " + std::to_string(length));
    return false;
  }
  return true;
}

}  // namespace

NAN_MODULE_INIT(MapHandle::Init) {
  v8::Local<v8::FunctionTemplate> tpl = Nan::New<v8::FunctionTemplate>(New);
  tpl->SetClassName(Nan::New("BpfMapHandle").ToLocalChecked());
  tpl->InstanceTemplate()->SetInternalFieldCount(1);
  Nan::SetPrototypeMethod(tpl, "fd", Fd);
  Nan::SetPrototypeMethod(tpl, "info", Info);
  Nan::SetPrototypeMethod(tpl, "lookup", Lookup);
  Nan::SetPrototypeMethod(tpl, "update", Update);
  Nan::SetPrototypeMethod(tpl, "delete", Delete);
  Nan::SetPrototypeMethod(tpl, "keys", Keys);
  Nan::SetPrototypeMethod(tpl, "updateBatch", UpdateBatch);
  Nan::SetPrototypeMethod(tpl, "lookupBatch", LookupBatch);
  Nan::SetPrototypeMethod(tpl, "deleteBatch", DeleteBatch);
  Nan::SetPrototypeMethod(tpl, "pin", Pin);
  Nan::SetPrototypeMethod(tpl, "close", CloseMethod);
  template_.Reset(tpl);
  constructor_.Reset(Nan::GetFunction(tpl).ToLocalChecked());
}

NAN_METHOD(MapHandle::New) {
  if (!info.IsConstructCall()) return ThrowArgError("BpfMapHandle", "use new");
  (new MapHandle())->Wrap(info.This());
  info.GetReturnValue().Set(info.This());
}

v8::Local<v8::Value> MapHandle::Make(int fd, const std::string& op) {
  bpf_map_info map_info;
  memset(&map_info, 0, sizeof(map_info));
  uint32_t length = sizeof(map_info);
  if (bpf_obj_get_info_by_fd(fd, &map_info, &length) != 0) {
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
  MapHandle* self = ObjectWrap::Unwrap<MapHandle>(handle);
  self->fd_ = fd;
  self->type_ = map_info.type;
  self->key_size_ = map_info.key_size;
  self->value_size_ = map_info.value_size;
  self->max_entries_ = map_info.max_entries;
  self->per_cpu_ = IsPerCpu(map_info.type);
  self->value_bytes_ = map_info.value_size;
  if (self->per_cpu_) {
    int cpus = libbpf_num_possible_cpus();
    self->value_bytes_ = ((map_info.value_size + 7) / 8) * 8 * static_cast<uint32_t>(cpus);
  }
  return handle;
}

MapHandle* MapHandle::Unwrap(v8::Local<v8::Value> value, const std::string& op) {
  if (!Nan::New(template_)->HasInstance(value)) {
    ThrowArgError(op, "expected a map handle");
    return nullptr;
  }
  MapHandle* map = ObjectWrap::Unwrap<MapHandle>(value.As<v8::Object>());
  return map->CheckOpen(op) ? map : nullptr;
}

MapHandle::~MapHandle() { Close(); }

void MapHandle::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool MapHandle::CheckOpen(const std::string& op) {
  if (fd_ >= 0) return true;
  ThrowBpfError(op, EBADF, "", "map is closed");
  return false;
}

#define MAP_SELF(op)                                            \
  MapHandle* self = ObjectWrap::Unwrap<MapHandle>(info.This()); \
  if (!self->CheckOpen(op)) return

NAN_METHOD(MapHandle::Fd) {
  MapHandle* self = ObjectWrap::Unwrap<MapHandle>(info.This());
  info.GetReturnValue().Set(self->fd_);
}

NAN_METHOD(MapHandle::Info) {
  MAP_SELF("bpf_obj_get_info_by_fd");
  bpf_map_info map_info;
  memset(&map_info, 0, sizeof(map_info));
  uint32_t length = sizeof(map_info);
  if (bpf_obj_get_info_by_fd(self->fd_, &map_info, &length) != 0) {
    return ThrowBpfError("bpf_obj_get_info_by_fd", errno);
  }
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "id", map_info.id);
  SetProp(out, "name", std::string(map_info.name));
  SetProp(out, "type", MapTypeName(map_info.type));
  SetProp(out, "typeId", map_info.type);
  SetProp(out, "keySize", map_info.key_size);
  SetProp(out, "valueSize", map_info.value_size);
  SetProp(out, "maxEntries", map_info.max_entries);
  SetProp(out, "flags", map_info.map_flags);
  SetProp(out, "btfId", map_info.btf_id);
  SetProp(out, "btfKeyTypeId", map_info.btf_key_type_id);
  SetProp(out, "btfValueTypeId", map_info.btf_value_type_id);
  SetProp(out, "perCpu", Nan::New(self->per_cpu_));
  SetProp(out, "valueBytes", self->value_bytes_);
  info.GetReturnValue().Set(out);
}

// Checks a key argument against the map's key size (maps without keys take an empty key).
#define MAP_KEY(op, index, name)                                                                 \
  char* name = nullptr;                                                                          \
  size_t name##_length = 0;                                                                      \
  if (!ArgBuffer(info[index], op, #name, &name, &name##_length)) return;                         \
  if (name##_length != self->key_size_) {                                                        \
    return ThrowArgError(op, #name " must be " + std::to_string(self->key_size_) +               \
                                 " bytes (map key size), got " + std::to_string(name##_length)); \
  }                                                                                              \
  if (name##_length == 0) name = nullptr

// lookup(key) -> Buffer | undefined (per-CPU maps: all CPUs' values, each rounded up to 8 bytes)
NAN_METHOD(MapHandle::Lookup) {
  MAP_SELF("bpf_map_lookup_elem");
  MAP_KEY("bpf_map_lookup_elem", 0, key);
  std::vector<char> value(std::max<uint32_t>(self->value_bytes_, 1));
  if (bpf_map_lookup_elem(self->fd_, key, value.data()) != 0) {
    if (errno == ENOENT) return;
    return ThrowBpfError("bpf_map_lookup_elem", errno);
  }
  info.GetReturnValue().Set(CopyBuffer(value.data(), self->value_bytes_));
}

// update(key, value, flag?)
NAN_METHOD(MapHandle::Update) {
  const std::string op = "bpf_map_update_elem";
  MAP_SELF(op);
  MAP_KEY(op, 0, key);
  char* value = nullptr;
  size_t value_length = 0;
  if (!ArgBuffer(info[1], op, "value", &value, &value_length)) return;
  if (value_length != self->value_bytes_) {
    return ThrowArgError(
        op, "value must be " + std::to_string(self->value_bytes_) +
                (self->per_cpu_ ? " bytes (per-CPU values)" : " bytes (map value size)") +
                ", got " + std::to_string(value_length));
  }
  uint64_t flags = 0;
  if (!ArgUpdateFlags(info[2], op, &flags)) return;
  if (bpf_map_update_elem(self->fd_, key, value, flags) != 0) return ThrowBpfError(op, errno);
}

// delete(key) -> true when the key existed
NAN_METHOD(MapHandle::Delete) {
  MAP_SELF("bpf_map_delete_elem");
  MAP_KEY("bpf_map_delete_elem", 0, key);
  if (bpf_map_delete_elem(self->fd_, key) != 0) {
    if (errno == ENOENT) return info.GetReturnValue().Set(false);
    return ThrowBpfError("bpf_map_delete_elem", errno);
  }
  info.GetReturnValue().Set(true);
}

// keys() -> Buffer[] in the kernel's order (bpf_map_get_next_key).
NAN_METHOD(MapHandle::Keys) {
  MAP_SELF("bpf_map_get_next_key");
  std::vector<char> current(self->key_size_), next(self->key_size_);
  v8::Local<v8::Array> out = Nan::New<v8::Array>();
  const void* previous = nullptr;
  // Bounded: a map that keeps changing cannot make this loop forever.
  uint64_t limit = static_cast<uint64_t>(self->max_entries_) * 2 + 16;
  for (uint32_t index = 0; index < limit; index++) {
    if (bpf_map_get_next_key(self->fd_, previous, next.data()) != 0) {
      if (errno == ENOENT) break;
      return ThrowBpfError("bpf_map_get_next_key", errno);
    }
    Nan::Set(out, index, CopyBuffer(next.data(), self->key_size_));
    current.swap(next);
    previous = current.data();
  }
  info.GetReturnValue().Set(out);
}

// updateBatch(keys: Buffer, values: Buffer, count, flag?): `count` packed keys and values.
NAN_METHOD(MapHandle::UpdateBatch) {
  const std::string op = "bpf_map_update_batch";
  MAP_SELF(op);
  uint32_t total = 0;
  char* keys = nullptr;
  char* values = nullptr;
  if (!ArgUint32(info[2], op, "count", &total)) return;
  if (!ArgPacked(info[0], op, "keys", self->key_size_, total, &keys)) return;
  if (!ArgPacked(info[1], op, "values", self->value_bytes_, total, &values)) return;
  uint64_t flags = 0;
  if (!ArgUpdateFlags(info[3], op, &flags)) return;
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = flags);
  uint32_t done = 0;
  while (done < total) {
    uint32_t count = total - done;
    int err = bpf_map_update_batch(self->fd_, keys + static_cast<size_t>(done) * self->key_size_,
                                   values + static_cast<size_t>(done) * self->value_bytes_, &count,
                                   &opts);
    if (err != 0) {
      return ThrowBpfError(
          op, errno, "",
          "in the batch from entry " + std::to_string(done) + " of " + std::to_string(total));
    }
    if (count == 0) return ThrowBpfError(op, EIO, "", "kernel made no progress");
    done += count;
  }
}

// lookupBatch() -> { keys: Buffer, values: Buffer, count } (concatenated fixed-size entries)
NAN_METHOD(MapHandle::LookupBatch) {
  const std::string op = "bpf_map_lookup_batch";
  MAP_SELF(op);
  const size_t ks = self->key_size_, vs = self->value_bytes_;
  uint32_t chunk = std::max<uint32_t>(std::min<uint32_t>(self->max_entries_, 4096), 64);
  std::vector<char> keys, values;
  // The batch token: a bucket index for hash maps, an index for arrays; at least the key size.
  std::vector<char> in_batch(std::max<size_t>(ks, 8)), out_batch(std::max<size_t>(ks, 8));
  bool first = true;
  size_t total = 0;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  for (int rounds = 0; rounds < 1 << 24; rounds++) {
    keys.resize((total + chunk) * ks);
    values.resize((total + chunk) * vs);
    uint32_t count = chunk;
    int err =
        bpf_map_lookup_batch(self->fd_, first ? nullptr : in_batch.data(), out_batch.data(),
                             keys.data() + total * ks, values.data() + total * vs, &count, &opts);
    int saved = errno;
    if (err != 0 && saved == ENOSPC && count == 0) {
      chunk *= 2;  // one hash bucket holds more entries than the chunk
      if (chunk > (1u << 24)) return ThrowBpfError(op, ENOSPC);
      continue;
    }
    if (err != 0 && saved != ENOENT) return ThrowBpfError(op, saved);
    total += count;
    if (err != 0) break;  // ENOENT: no more entries
    in_batch.swap(out_batch);
    first = false;
  }
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "keys", CopyBuffer(keys.data(), total * ks));
  SetProp(out, "values", CopyBuffer(values.data(), total * vs));
  SetProp(out, "count", static_cast<double>(total));
  info.GetReturnValue().Set(out);
}

// deleteBatch(keys: Buffer, count) -> number deleted of `count` packed keys (absent ones are
// skipped)
NAN_METHOD(MapHandle::DeleteBatch) {
  const std::string op = "bpf_map_delete_batch";
  MAP_SELF(op);
  uint32_t total = 0;
  char* keys = nullptr;
  if (!ArgUint32(info[1], op, "count", &total)) return;
  if (!ArgPacked(info[0], op, "keys", self->key_size_, total, &keys)) return;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  uint32_t done = 0, deleted = 0;
  while (done < total) {
    uint32_t count = total - done;
    int err = bpf_map_delete_batch(self->fd_, keys + static_cast<size_t>(done) * self->key_size_,
                                   &count, &opts);
    deleted += count;
    done += count;
    if (err != 0) {
      if (errno != ENOENT) return ThrowBpfError(op, errno);
      done++;  // the key at `done` was absent: skip it
    }
  }
  info.GetReturnValue().Set(deleted);
}

NAN_METHOD(MapHandle::Pin) {
  MAP_SELF("bpf_obj_pin");
  PinFd(self->fd_, info[0]);
}

NAN_METHOD(MapHandle::CloseMethod) { ObjectWrap::Unwrap<MapHandle>(info.This())->Close(); }

// createMap({ type, name, keySize, valueSize, maxEntries, flags?, innerMap? }) -> MapHandle
NAN_METHOD(CreateMap) {
  const std::string op = "bpf_map_create";
  if (!info[0]->IsObject()) return ThrowArgError(op, "options must be an object");
  v8::Local<v8::Object> options = info[0].As<v8::Object>();
  std::string type_name, name;
  uint32_t key_size = 0, value_size = 0, max_entries = 0, flags = 0;
  bool present = false;
  if (!OptString(options, "type", op, &type_name, &present)) return;
  if (!present) return ThrowArgError(op, "type is required");
  if (!OptString(options, "name", op, &name, &present)) return;
  if (!OptUint32(options, "keySize", op, &key_size, &present)) return;
  if (!OptUint32(options, "valueSize", op, &value_size, &present)) return;
  if (!OptUint32(options, "maxEntries", op, &max_entries, &present)) return;
  if (!OptUint32(options, "flags", op, &flags, &present)) return;
  int type = -1;
  for (int candidate = 1; candidate < 64; candidate++) {
    const char* candidate_name = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(candidate));
    if (candidate_name != nullptr && type_name == candidate_name) type = candidate;
  }
  if (type < 0) return ThrowArgError(op, "type '" + type_name + "' is not a known map type");
  LIBBPF_OPTS(bpf_map_create_opts, create_opts, .map_flags = flags);
  v8::Local<v8::Value> inner;
  if (!Nan::Get(options, Nan::New("innerMap").ToLocalChecked()).ToLocal(&inner)) return;
  if (!inner->IsUndefined()) {
    MapHandle* inner_map = MapHandle::Unwrap(inner, op + " innerMap");
    if (inner_map == nullptr) return;
    create_opts.inner_map_fd = static_cast<uint32_t>(inner_map->fd());
  }
  int fd = bpf_map_create(static_cast<bpf_map_type>(type), name.empty() ? nullptr : name.c_str(),
                          key_size, value_size, max_entries, &create_opts);
  if (fd < 0) return ThrowBpfError(op, errno, "", name);
  v8::Local<v8::Value> handle = MapHandle::Make(fd, op);
  if (!handle.IsEmpty()) info.GetReturnValue().Set(handle);
}

// openPinnedMap(path) -> MapHandle
NAN_METHOD(OpenPinnedMap) {
  int fd = OpenPinnedOfKind(info[0], "map", "a map");
  if (fd < 0) return;
  v8::Local<v8::Value> handle = MapHandle::Make(fd, "openPinnedMap");
  if (!handle.IsEmpty()) info.GetReturnValue().Set(handle);
}

NAN_METHOD(PossibleCpus) {
  int cpus = libbpf_num_possible_cpus();
  if (cpus < 0) return ThrowBpfError("libbpf_num_possible_cpus", cpus);
  info.GetReturnValue().Set(cpus);
}

// mapTypes() -> the map type names this libbpf knows (for createMap).
NAN_METHOD(MapTypes) {
  v8::Local<v8::Array> out = Nan::New<v8::Array>();
  uint32_t index = 0;
  for (int type = 1; type < 64; type++) {
    const char* name = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(type));
    if (name != nullptr) Nan::Set(out, index++, Nan::New(name).ToLocalChecked());
  }
  info.GetReturnValue().Set(out);
}

}  // namespace sluice
