// The playground: posts one chat completion to this node's OpenAI route (the same route, and so
// the same checks, as any other client: loopback, JSON body, Origin, Host, price cap), shows the
// tokens as they stream, then the verdict and the price from the last chunk's `dn` field.
"use strict";
(function () {
  const form = document.getElementById("ask");
  const answer = document.getElementById("answer");
  const verdict = document.getElementById("verdict");
  const send = document.getElementById("send");
  const units = Number(form.dataset.units);

  function say(text, cls) {
    verdict.replaceChildren(text);
    verdict.className = "verdict " + (cls || "");
  }

  function maxPrice() {
    const raw = form.elements.max_price.value.trim();
    if (!raw) return null;
    const dn = Number(raw);
    if (!Number.isFinite(dn) || dn < 0) throw new Error("the max price is a number of DN");
    return Math.round(dn * units);
  }

  function dn(unitsPaid) {
    const whole = Math.floor(unitsPaid / units);
    const frac = String(unitsPaid % units).padStart(9, "0").replace(/0+$/, "");
    return frac ? whole + "." + frac : String(whole);
  }

  function showVerdict(result) {
    verdict.dataset.status = result.status;
    verdict.className = "verdict " + (result.status === "confirmed" ? "good" : "bad");
    const link = document.createElement("a");
    link.href = "/task/" + result.task;
    link.textContent = "task " + result.task.slice(0, 12) + "…";
    const paid = result.status === "confirmed" ? "paid " + dn(result.price_units) + " DN" : "not charged";
    const settle = result.settle_tx ? "" : " · settlement refused: " + (result.settle_error || "?");
    verdict.replaceChildren(result.status + " · " + paid + settle + " · ", link);
  }

  async function ask(body) {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      let message = "HTTP " + response.status;
      try {
        const err = (await response.json()).error;
        message = err.message + " (" + err.code + ")";
      } catch (_) { /* not JSON: keep the status */ }
      throw new Error(message);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let result = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const chunk = JSON.parse(line.slice(6));
          if (chunk.error) throw new Error(chunk.error.message + " (" + chunk.error.code + ")");
          const choice = (chunk.choices || [])[0];
          if (choice && choice.delta && choice.delta.content) answer.textContent += choice.delta.content;
          if (chunk.dn) result = chunk.dn;
        }
      }
    }
    if (!result) throw new Error("the stream ended without a verdict");
    return result;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    answer.textContent = "";
    delete verdict.dataset.status;
    send.disabled = true;
    try {
      const body = {
        model: form.elements.model.value,
        messages: [{ role: "user", content: form.elements.prompt.value }],
        max_tokens: Number(form.elements.max_tokens.value),
        stream: true,
      };
      const cap = maxPrice();
      if (cap !== null) body.dn_max_price = cap;
      say("streaming… the checker re-scores each token as it comes", "");
      showVerdict(await ask(body));
    } catch (err) {
      verdict.dataset.status = "error";
      say("error: " + err.message, "bad");
    } finally {
      send.disabled = false;
    }
  });
})();
