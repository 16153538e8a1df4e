#include "common/text_proto.h"

#include <cmath>
#include <memory>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace spargo {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Collects the text-format parser's errors as "source:line:column: message" (1-based line and column).
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  explicit ErrorCollector(absl::string_view source) : source_(source) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    errors_.push_back(absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    errors_.push_back(absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message));
  }
  std::string Joined() const { return absl::StrJoin(errors_, "\n"); }
  bool empty() const { return errors_.empty(); }

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

// One component of an override path: a field name and an optional index.
struct PathPart {
  std::string name;
  int index = -1;
};

absl::StatusOr<PathPart> ParsePathPart(absl::string_view part) {
  PathPart out;
  size_t bracket = part.find('[');
  if (bracket == absl::string_view::npos) {
    out.name = std::string(part);
  } else {
    if (part.back() != ']') return absl::InvalidArgumentError(absl::StrCat("malformed index in '", part, "'"));
    out.name = std::string(part.substr(0, bracket));
    absl::string_view digits = part.substr(bracket + 1, part.size() - bracket - 2);
    if (!absl::SimpleAtoi(digits, &out.index) || out.index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("malformed index in '", part, "'"));
    }
  }
  if (out.name.empty()) return absl::InvalidArgumentError("empty field name in path");
  return out;
}

absl::StatusOr<const FieldDescriptor*> FindField(const Descriptor* type, const std::string& name) {
  const FieldDescriptor* field = type->FindFieldByName(name);
  if (field == nullptr) {
    std::vector<std::string> names;
    for (int i = 0; i < type->field_count(); ++i) names.push_back(type->field(i)->name());
    return absl::InvalidArgumentError(absl::StrCat(type->full_name(), " has no field named '", name,
                                                   "' (fields: ", absl::StrJoin(names, ", "), ")"));
  }
  return field;
}

absl::Status BadValue(const FieldDescriptor* field, absl::string_view value) {
  return absl::InvalidArgumentError(absl::StrCat("cannot parse '", value, "' as ", field->type_name(),
                                                 " for field ", field->full_name()));
}

// Parses an integer `value` and stores it through the reflection setter that fits the field's cardinality.
template <typename T>
absl::Status SetNumber(Message* message, const FieldDescriptor* field, int index, bool append,
                       absl::string_view value,
                       void (Reflection::*set)(Message*, const FieldDescriptor*, T) const,
                       void (Reflection::*set_repeated)(Message*, const FieldDescriptor*, int, T) const,
                       void (Reflection::*add)(Message*, const FieldDescriptor*, T) const) {
  T v;
  if (!absl::SimpleAtoi(value, &v)) return BadValue(field, value);
  const Reflection* r = message->GetReflection();
  if (append) (r->*add)(message, field, v);
  else if (field->is_repeated()) (r->*set_repeated)(message, field, index, v);
  else (r->*set)(message, field, v);
  return absl::OkStatus();
}

// Sets the singular scalar `field` of `message` (or element `index` of a repeated one; index == size appends).
absl::Status SetScalar(Message* message, const FieldDescriptor* field, int index, absl::string_view value) {
  const Reflection* r = message->GetReflection();
  const bool repeated = field->is_repeated();
  if (repeated) {
    int size = r->FieldSize(*message, field);
    if (index < 0 || index > size) {
      return absl::InvalidArgumentError(absl::StrCat("repeated field ", field->full_name(), " needs an index in [0, ",
                                                     size, "]"));
    }
  } else if (index >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("field ", field->full_name(), " is not repeated"));
  }
  const bool append = repeated && index == r->FieldSize(*message, field);
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return SetNumber<int32_t>(message, field, index, append, value, &Reflection::SetInt32,
                                &Reflection::SetRepeatedInt32, &Reflection::AddInt32);
    case FieldDescriptor::CPPTYPE_INT64:
      return SetNumber<int64_t>(message, field, index, append, value, &Reflection::SetInt64,
                                &Reflection::SetRepeatedInt64, &Reflection::AddInt64);
    case FieldDescriptor::CPPTYPE_UINT32:
      return SetNumber<uint32_t>(message, field, index, append, value, &Reflection::SetUInt32,
                                 &Reflection::SetRepeatedUInt32, &Reflection::AddUInt32);
    case FieldDescriptor::CPPTYPE_UINT64:
      return SetNumber<uint64_t>(message, field, index, append, value, &Reflection::SetUInt64,
                                 &Reflection::SetRepeatedUInt64, &Reflection::AddUInt64);
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double v;
      if (!absl::SimpleAtod(value, &v) || !std::isfinite(v)) return BadValue(field, value);
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT) {
        if (append) r->AddFloat(message, field, static_cast<float>(v));
        else if (repeated) r->SetRepeatedFloat(message, field, index, static_cast<float>(v));
        else r->SetFloat(message, field, static_cast<float>(v));
      } else {
        if (append) r->AddDouble(message, field, v);
        else if (repeated) r->SetRepeatedDouble(message, field, index, v);
        else r->SetDouble(message, field, v);
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      std::string lower = absl::AsciiStrToLower(value);
      bool v;
      if (lower == "true" || lower == "1") v = true;
      else if (lower == "false" || lower == "0") v = false;
      else return BadValue(field, value);
      if (append) r->AddBool(message, field, v);
      else if (repeated) r->SetRepeatedBool(message, field, index, v);
      else r->SetBool(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string v(value);
      if (append) r->AddString(message, field, v);
      else if (repeated) r->SetRepeatedString(message, field, index, v);
      else r->SetString(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumValueDescriptor* ev = field->enum_type()->FindValueByName(std::string(value));
      if (ev == nullptr) {
        std::vector<std::string> names;
        for (int i = 0; i < field->enum_type()->value_count(); ++i) {
          names.push_back(field->enum_type()->value(i)->name());
        }
        return absl::InvalidArgumentError(absl::StrCat("'", value, "' is not a value of ", field->full_name(),
                                                       " (values: ", absl::StrJoin(names, ", "), ")"));
      }
      if (append) r->AddEnum(message, field, ev);
      else if (repeated) r->SetRepeatedEnum(message, field, index, ev);
      else r->SetEnum(message, field, ev);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return absl::InvalidArgumentError(
          absl::StrCat("field ", field->full_name(), " is a message; name one of its fields"));
  }
  return absl::InternalError("unhandled field type");
}

absl::Status ApplyOverrideTo(absl::string_view path, absl::string_view value, Message* message) {
  std::vector<absl::string_view> parts = absl::StrSplit(path, '.');
  Message* current = message;
  for (size_t i = 0; i < parts.size(); ++i) {
    SPARGO_ASSIGN_OR_RETURN(PathPart part, ParsePathPart(parts[i]));
    SPARGO_ASSIGN_OR_RETURN(const FieldDescriptor* field, FindField(current->GetDescriptor(), part.name));
    const bool last = i + 1 == parts.size();
    if (last) return SetScalar(current, field, part.index, value);
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
      return absl::InvalidArgumentError(absl::StrCat("field ", field->full_name(), " is not a message"));
    }
    const Reflection* r = current->GetReflection();
    if (field->is_repeated()) {
      int size = r->FieldSize(*current, field);
      if (part.index < 0 || part.index > size) {
        return absl::InvalidArgumentError(absl::StrCat("repeated field ", field->full_name(),
                                                       " needs an index in [0, ", size, "]"));
      }
      current = part.index == size ? r->AddMessage(current, field)
                                   : r->MutableRepeatedMessage(current, field, part.index);
    } else {
      if (part.index >= 0) {
        return absl::InvalidArgumentError(absl::StrCat("field ", field->full_name(), " is not repeated"));
      }
      current = r->MutableMessage(current, field);
    }
  }
  return absl::InvalidArgumentError("empty path");
}

}  // namespace

absl::Status ParseTextProto(absl::string_view text, absl::string_view source_name, Message* message) {
  ErrorCollector errors(source_name);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  std::unique_ptr<Message> parsed(message->New());
  if (!parser.ParseFromString(std::string(text), parsed.get()) || !errors.empty()) {
    return absl::InvalidArgumentError(errors.empty() ? absl::StrCat(source_name, ": malformed text proto")
                                                     : errors.Joined());
  }
  message->CopyFrom(*parsed);
  return absl::OkStatus();
}

absl::Status LoadTextProtoFile(const std::string& path, Message* message) {
  absl::StatusOr<std::string> text = ReadFileToString(path, "config file");
  if (!text.ok()) return text.status();
  return ParseTextProto(*text, path, message);
}

absl::Status ApplyFieldOverride(absl::string_view assignment, Message* message) {
  size_t eq = assignment.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set ", assignment, ": expected path.to.field=value"));
  }
  absl::string_view path = absl::StripAsciiWhitespace(assignment.substr(0, eq));
  absl::string_view value = assignment.substr(eq + 1);
  std::unique_ptr<Message> copy(message->New());
  copy->CopyFrom(*message);
  absl::Status status = ApplyOverrideTo(path, value, copy.get());
  if (!status.ok()) return Annotate(status, absl::StrCat("--set ", assignment));
  message->CopyFrom(*copy);
  return absl::OkStatus();
}

std::string ToTextProto(const Message& message) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(message, &out);
  return out;
}

}  // namespace spargo
