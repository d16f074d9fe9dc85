// sluice_bpf: a thin, generic nan binding over libbpf. Buffers in and out; no program-specific
// code. The typed wrapper native/index.ts is the only user of these exports.
#include "common.h"

namespace sluice {

NAN_MODULE_INIT(Init) {
  InstallLibbpfPrint();
  ObjectHandle::Init(target);
  MapHandle::Init(target);
  ProgHandle::Init(target);
  LinkHandle::Init(target);
  Nan::SetMethod(target, "setErrorClass", SetErrorClass);
  Nan::SetMethod(target, "loadObject", ObjectHandle::Load);
  Nan::SetMethod(target, "createMap", CreateMap);
  Nan::SetMethod(target, "openPinnedMap", OpenPinnedMap);
  Nan::SetMethod(target, "openPinnedProgram", OpenPinnedProgram);
  Nan::SetMethod(target, "openPinnedLink", OpenPinnedLink);
  Nan::SetMethod(target, "runIter", RunIter);
  Nan::SetMethod(target, "possibleCpus", PossibleCpus);
  Nan::SetMethod(target, "mapTypes", MapTypes);
}

}  // namespace sluice

NODE_MODULE(sluice_bpf, sluice::Init)
