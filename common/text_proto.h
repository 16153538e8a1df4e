// Loading protobuf text-format files (experiment configs) with precise errors, and `path.to.field=value` overrides.
//  - ParseTextProto: parses `text` into `message` (cleared first). Errors name the source, line, column and field:
//    "cfg.txtpb:3:7: Message type "spargo.config.RolloutConfig" has no field named "groupsize"."
//  - LoadTextProtoFile: the same for a file; a missing or unreadable file is NOT_FOUND / INVALID_ARGUMENT.
//  - ApplyFieldOverride("learner.grpo.optimizer.lr=3e-4", &message): sets one scalar field through reflection.
//    Path components are field names; repeated message fields take an index (`tasks[0].weight=2`), and an index
//    equal to the current size appends. Scalars parse strictly (bool: true/false/1/0; enums by value name).
//  All failures are INVALID_ARGUMENT and leave `message` unchanged.
#ifndef SPARGO_COMMON_TEXT_PROTO_H_
#define SPARGO_COMMON_TEXT_PROTO_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace spargo {

absl::Status ParseTextProto(absl::string_view text, absl::string_view source_name,
                            google::protobuf::Message* message);

absl::Status LoadTextProtoFile(const std::string& path, google::protobuf::Message* message);

absl::Status ApplyFieldOverride(absl::string_view assignment, google::protobuf::Message* message);

// Text format of `message`, as written into run directories.
std::string ToTextProto(const google::protobuf::Message& message);

}  // namespace spargo

#endif  // SPARGO_COMMON_TEXT_PROTO_H_
