#include "agent/town_documents.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/counter_rng.h"

namespace spargo::agent {
namespace {

// 8 x 8 x 8 = 512 names: first syllables start with distinct capitals and last syllables are distinct endings, so
// every (first, middle, last) triple spells a different word.
constexpr const char* kFirst[] = {"Bar", "Cor", "Dun", "Fen", "Gal", "Hol", "Kes", "Lor"};
constexpr const char* kMiddle[] = {"a", "e", "i", "o", "u", "ar", "en", "il"};
constexpr const char* kLast[] = {"wick", "ford", "by", "ton", "mere", "holt", "stead", "worth"};
constexpr uint64_t kPopulationSalt = 0x746f776e73ULL;

}  // namespace

Town TownAt(int i) {
  // A fixed permutation of the index spreads neighbouring towns over the syllables.
  const int j = static_cast<int>((static_cast<uint64_t>(i) * 205 + 77) % kTownCount);  // 205 is odd: a bijection
  Town t;
  t.name = absl::StrCat(kFirst[j / 64], kMiddle[(j / 8) % 8], kLast[j % 8]);
  CounterRng rng(kPopulationSalt, {static_cast<uint64_t>(i)});
  t.population = 1000 + static_cast<int>(rng.Below(9000));
  return t;
}

std::vector<Document> TownDocuments() {
  std::vector<Document> docs;
  docs.reserve(kTownCount);
  for (int i = 0; i < kTownCount; ++i) {
    const Town t = TownAt(i);
    docs.push_back(
        Document{absl::StrCat("town-", i), t.name, absl::StrCat(t.name, ": population ", t.population, ".")});
  }
  return docs;
}

}  // namespace spargo::agent
