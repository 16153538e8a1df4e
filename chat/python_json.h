// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it: ", " and ": " separators,
// object keys in their given order, non-ASCII characters as they are, control characters escaped. DeepSeek's
// chat format embeds tool schemas and arguments this way, so prompts must reproduce it byte for byte.
#ifndef SPARGO_CHAT_PYTHON_JSON_H_
#define SPARGO_CHAT_PYTHON_JSON_H_

#include <string>

#include "nlohmann/json.hpp"

namespace spargo::chat {

std::string PythonJsonDumps(const nlohmann::ordered_json& value);

}  // namespace spargo::chat

#endif  // SPARGO_CHAT_PYTHON_JSON_H_
