// The built-in document collection: made-up towns and their populations, facts no model can know, so that the
// built-in DOCUMENT_SEARCH tasks (learner/builtin_tasks.h) are answerable only by searching. Town i (0 <= i <
// kTownCount) has a unique one-word name of three syllables and a population in [1000, 9999], both pure functions
// of i (no seed), so the tasks and the environment (AgentConfig.builtin_documents) agree in every process.
// Document i: {"id": "town-<i>", "title": name, "text": "<name>: population <n>."}; a search for the name
// matches that document only.
#ifndef SPARGO_AGENT_TOWN_DOCUMENTS_H_
#define SPARGO_AGENT_TOWN_DOCUMENTS_H_

#include <string>
#include <vector>

#include "agent/document_search.h"

namespace spargo::agent {

inline constexpr int kTownCount = 512;

struct Town {
  std::string name;
  int population = 0;
};

// Town i (0 <= i < kTownCount).
Town TownAt(int i);
// The collection, document i describing town i.
std::vector<Document> TownDocuments();

}  // namespace spargo::agent

#endif  // SPARGO_AGENT_TOWN_DOCUMENTS_H_
