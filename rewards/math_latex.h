// Text-level normalisation of a maths answer (LaTeX or plain text) into one canonical spelling, before the
// structural comparison in rewards/math_answer.h. NormalizeMathText:
//  - math delimiters go: $, $$, \( \), \[ \], and the escaped dollar \$ (a currency sign: "\$10" is 10);
//  - thousands separators go where they are unambiguous: "14{,}916", "10,\!000", "32,\! 349", and a whole answer
//    of the form "7,425,000" or "1 000"; "32, 349" (comma then space) stays a list of two numbers;
//  - \dfrac \tfrac \cfrac -> \frac; \frac94, \frac3{3}, \frac{1}3 -> \frac{9}{4} ...; \sqrt3, \sqrt 3 -> \sqrt{3};
//  - relations: \geq \ge \geqslant -> ">=", \leq \le \leqslant -> "<=", \neq \ne -> "!=", \lt -> "<", \gt -> ">";
//  - layout goes: \left \right \big.. \displaystyle, \! \, \; \: \quad \qquad (also glued: "\quadx"), **bold**;
//  - \text \textbf \textnormal \mbox \mathrm \mathbf \operatorname ...{c}: "and"/"or" become a list comma; after
//    a value they are units and go with a following ^2/^3 ("5 \text{ cm}.", "15\mbox{ cm}^2"); elsewhere c stays;
//  - unit words after a lone number go ("125 miles"), "percent"/"pct"/"percentage" -> "%", degrees go (^\circ, °);
//  - the words "and"/"or" between values become list commas ("$1$ and $2$", "(11,7)or(7,11)");
//  - "x \in" before a set or interval goes, "+\infty" -> "\infty", x_1 -> x_{1}, trailing ".,;:" go;
//  - whitespace goes (after the above, so that "32, 349" was already seen as a list);
//  - an answer wrapped in bare braces "{1,2,3}" becomes the set "\{1,2,3\}" (or loses the braces when it holds
//    no comma).
// Linear in the length of the answer except for a few whole-answer regular expressions.
#ifndef SPARGO_REWARDS_MATH_LATEX_H_
#define SPARGO_REWARDS_MATH_LATEX_H_

#include <string>

#include "absl/strings/string_view.h"

namespace spargo::rewards {

std::string NormalizeMathText(absl::string_view answer);

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_MATH_LATEX_H_
