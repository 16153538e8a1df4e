#include "rollout/sample.h"

namespace spargo::rollout {

const char* SampleFinishName(SampleFinish finish) {
  switch (finish) {
    case SampleFinish::kStop:
      return "stop";
    case SampleFinish::kLength:
      return "length";
    case SampleFinish::kAborted:
      return "aborted";
  }
  return "unknown";
}

}  // namespace spargo::rollout
