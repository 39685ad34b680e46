// media.mjs — attachments in the web client (issue 13, docs/protocol.md
// section 8), between alice and bob in a DM. The server runs with
// --media-max-file 1048576 (a 1 MiB limit for documents).
//
// 1. alice attaches a PNG (made here), a PDF and a WAV through the file
//    input: chips with progress appear; she sends them with a text.
// 2. bob sees the image thumbnail over its BlurHash placeholder canvas (the
//    thumbnail request is held back so the canvas is seen first; then
//    naturalWidth > 0), the PDF's file card with name and size and a
//    download link, the <audio> player; the lightbox opens on a click (full
//    image, alt text, focus inside) and closes with Escape (focus back); a
//    thumbnail whose signed URL has expired is loaded again with fresh URLs.
// 3. a file dropped on the conversation (a synthetic drop event with a
//    DataTransfer) and one pasted into the composer become attachments and
//    go out with an empty body.
// 4. an upload held back (page.route) is cancelled from its chip: the next
//    message carries no attachment. Send pressed while an upload runs goes
//    out (with it) when the upload finishes.
// 5. a 2 MB PDF over the limit: the chip says it is too large; nothing sent.
// 6. a resumable upload (thresholds lowered through window.parley.mediaConfig)
//    whose second PATCH loses its connection resumes from HEAD's offset.
//    A video recorded from a canvas in the page plays in a <video>.
// 7. search with "Has attachments" finds the message with media and not
//    the text-only one with the same word.
//
// usage: node media.mjs http://127.0.0.1:PORT

import { crc32, deflateSync } from 'node:zlib';
import {
  run, signedIn, startDm, convItem, openConv, send, waitFor, check, shot, log, messages,
} from './lib.mjs';

/** A valid w×h RGB PNG with a gradient. */
function png(w, h) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    const o = y * (w * 3 + 1);
    for (let x = 0; x < w; x++) {
      raw[o + 1 + x * 3] = Math.round((255 * x) / w);
      raw[o + 2 + x * 3] = Math.round((255 * y) / h);
      raw[o + 3 + x * 3] = 160;
    }
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

/** A mono 8 kHz 16-bit WAV of a tone. */
function wav(seconds) {
  const n = 8000 * seconds;
  const b = Buffer.alloc(44 + n * 2);
  b.write('RIFF', 0); b.writeUInt32LE(36 + n * 2, 4); b.write('WAVE', 8); b.write('fmt ', 12);
  b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22); b.writeUInt32LE(8000, 24);
  b.writeUInt32LE(16000, 28); b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34); b.write('data', 36); b.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) b.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / 8000)), 44 + i * 2);
  return b;
}

/** A PDF-looking document of about `size` bytes. */
function pdf(size) {
  const head = '%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n';
  const tail = '\ntrailer << /Root 1 0 R >>\n%%EOF\n';
  return Buffer.concat([Buffer.from(head), Buffer.alloc(Math.max(0, size - head.length - tail.length), 0x20), Buffer.from(tail)]);
}

const chips = (p) => p.page.$$eval('[data-testid="attach-chip"]', (els) => els.map((e) => ({
  name: e.dataset.name, state: e.dataset.state, text: e.querySelector('[data-testid="attach-status"]').textContent,
})));

/** Records, in the page, the highest upload progress a chip showed. */
async function watchProgress(p) {
  await p.page.evaluate(() => {
    window.__maxProgress = 0;
    window.__sawUploading = 0;
    const list = document.getElementById('attach-list');
    const mo = new MutationObserver(() => {
      for (const c of list.querySelectorAll('[data-testid="attach-chip"]')) {
        if (c.dataset.state === 'uploading') window.__sawUploading++;
        const v = Number(c.querySelector('progress').getAttribute('value') || 0);
        window.__maxProgress = Math.max(window.__maxProgress, v);
      }
    });
    mo.observe(list, { subtree: true, attributes: true, childList: true });
  });
}

/** bob's last message item (a locator). */
const lastMsg = (p) => p.page.locator('[data-testid="message"]').last();

await run('media: attachments in the web client', async () => {
  const [alice, bob] = await signedIn('alice', 'bob');
  const convId = await startDm(alice, 'bob');
  await send(alice, 'Quarterly numbers come later');
  await convItem(bob, convId).waitFor({ state: 'visible' });
  await openConv(bob, convId);
  await waitFor(async () => (await messages(bob)).length === 1, 'bob sees the first message');

  // bob's thumbnails are held back a moment so the placeholder shows first
  let releaseThumbs;
  const thumbsHeld = new Promise((r) => { releaseThumbs = r; });
  await bob.page.route(/\/media\/\d+\?.*thumb=1/, async (route) => { await thumbsHeld; await route.continue(); });

  // ---- 1. three files through the attach button's input
  log('1. attach a PNG, a PDF and a WAV');
  await watchProgress(alice);
  const files = [
    { name: 'sunset.png', mimeType: 'image/png', buffer: png(120, 80) },
    { name: 'report.pdf', mimeType: 'application/pdf', buffer: pdf(5000) },
    { name: 'voice-note.wav', mimeType: 'audio/wav', buffer: wav(1) },
  ];
  check(await alice.page.getByTestId('attach-button').isVisible(), 'the attach button is shown');
  check((await alice.page.getByTestId('attach-button').getAttribute('aria-label')) === 'Attach files', 'the attach button has a label');
  await alice.page.getByTestId('attach-input').setInputFiles(files);
  await waitFor(async () => (await chips(alice)).length === 3, 'three chips in the composer');
  await waitFor(async () => (await chips(alice)).every((c) => c.state === 'done'), 'the three uploads finish', 15_000);
  const maxP = await alice.page.evaluate(() => window.__maxProgress);
  check(maxP > 0, `upload progress was shown (max ${maxP}%)`);
  check(await alice.page.locator('[data-testid="attach-chip"] img.attach-thumb').count() === 1, 'the image chip previews the picture');
  await shot(alice, 'media-composer');
  await send(alice, 'Quarterly report attached');
  await waitFor(async () => (await chips(alice)).length === 0, 'the composer is cleared after sending');
  await waitFor(async () => { const m = await messages(alice); return m.length === 2 && m[1].seq != null; }, 'alice sees her message sent');

  // ---- 2. bob sees them
  log('2. bob sees thumbnail, file card, audio');
  const m2 = lastMsg(bob);
  await waitFor(async () => (await m2.getByTestId('message-body').textContent()) === 'Quarterly report attached', 'bob gets the message');
  const fig = m2.getByTestId('media-image');
  await fig.waitFor();
  check(await m2.getByTestId('media-placeholder').count() === 1, 'a placeholder canvas is drawn');
  check(!(await fig.evaluate((e) => e.classList.contains('loaded'))), 'the placeholder shows while the thumbnail loads');
  const box = await fig.boundingBox();
  check(box && Math.abs(box.width / box.height - 1.5) < 0.05, `the space is reserved from width/height (${box && box.width}x${box && box.height})`);
  const px = await m2.getByTestId('media-placeholder').evaluate((c) => [...c.getContext('2d').getImageData(16, 16, 1, 1).data]);
  check(px[3] === 255 && px[0] + px[1] + px[2] > 0, `the placeholder is painted (${px})`);
  releaseThumbs();
  await waitFor(() => fig.evaluate((e) => e.classList.contains('loaded') && e.querySelector('img').naturalWidth > 0), 'the thumbnail loads');
  check((await m2.getByTestId('media-thumb').getAttribute('alt')) === 'sunset.png', 'the thumbnail has the name as alt text');
  const card = m2.getByTestId('media-file');
  check(await card.count() === 1, 'one file card');
  check((await card.getByTestId('media-file-name').textContent()) === 'report.pdf', 'the card shows the name');
  const sizeText = await card.getByTestId('media-file-size').textContent();
  check(/^4\.9 KB · PDF$/.test(sizeText), `the card shows size and type: ${sizeText}`);
  const dl = card.getByTestId('media-download');
  check((await dl.getAttribute('download')) === 'report.pdf' && /^\/media\/\d+\?exp=/.test(await dl.getAttribute('href')),
    'the card links a signed download');
  const audio = m2.getByTestId('media-audio');
  check(await audio.count() === 1 && /^\/media\/\d+\?exp=/.test(await audio.getAttribute('src')), 'an audio player with the signed URL');
  await waitFor(() => audio.evaluate((a) => a.readyState >= 1 && a.duration > 0.9), 'the voice note loads its metadata');
  await shot(bob, 'media-conversation');

  // an expired signed URL: the element fails to load, fresh URLs are fetched
  log('2a. expired URL refreshed');
  const thumb = m2.getByTestId('media-thumb');
  await thumb.evaluate((i) => { i.src = `/media/${i.closest('[data-media-id]').dataset.mediaId}?exp=1&sig=AAAA&thumb=1`; });
  await waitFor(() => thumb.evaluate((i) => /[?&]exp=\d{10}&/.test(i.getAttribute('src')) && i.complete && i.naturalWidth > 0),
    'an expired thumbnail URL is replaced by a fresh one');

  // lightbox
  log('2b. lightbox');
  await fig.click();
  const lb = bob.page.getByTestId('lightbox');
  await lb.waitFor({ state: 'visible' });
  check((await lb.getAttribute('aria-label')) === 'sunset.png', 'the lightbox is labelled');
  await waitFor(() => bob.page.getByTestId('lightbox-img').evaluate((i) => i.naturalWidth === 120 && i.alt === 'sunset.png'), 'the full image shows');
  check(await bob.page.evaluate(() => document.activeElement && document.activeElement.closest('[data-testid="lightbox"]') != null), 'focus is in the lightbox');
  for (let i = 0; i < 3; i++) await bob.page.keyboard.press('Tab');
  check(await bob.page.evaluate(() => document.activeElement && document.activeElement.closest('[data-testid="lightbox"]') != null), 'Tab stays in the lightbox');
  await shot(bob, 'media-lightbox');
  await bob.page.keyboard.press('Escape');
  await lb.waitFor({ state: 'hidden' });
  check(await bob.page.evaluate(() => document.activeElement && document.activeElement.dataset.testid === 'media-image'), 'focus returns to the image');

  // ---- 3. drop and paste, sent with an empty body
  log('3. drag-and-drop and paste');
  await alice.page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['dropped notes\n'], 'dropped.txt', { type: 'text/plain' }));
    const target = document.getElementById('messages');
    for (const type of ['dragenter', 'dragover', 'drop']) {
      target.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  });
  await waitFor(async () => (await chips(alice)).some((c) => c.name === 'dropped.txt'), 'the dropped file becomes a chip');
  check(!(await alice.page.locator('#conv.drop-target').count()), 'the drop highlight goes away');
  await alice.page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['a,b\n1,2\n'], 'pasted.csv', { type: 'text/csv' }));
    document.getElementById('composer-input').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
  });
  await waitFor(async () => (await chips(alice)).some((c) => c.name === 'pasted.csv'), 'the pasted file becomes a chip');
  check((await alice.page.getByTestId('composer-input').inputValue()) === '', 'the paste put no text in the composer');
  await waitFor(async () => (await chips(alice)).every((c) => c.state === 'done'), 'both upload');
  await alice.page.getByTestId('composer-input').press('Enter');   // an empty body: attachments only
  const m3 = lastMsg(bob);
  await waitFor(async () => (await m3.getByTestId('media-file-name').allTextContents()).join(',') === 'dropped.txt,pasted.csv',
    'bob gets the dropped and pasted files (no text)');
  check((await m3.getByTestId('message-body').textContent()) === '', 'the message has no text');
  await waitFor(async () => /📎 File: dropped\.txt \(\+1\)/.test(await convItem(alice, convId).getByTestId('conv-preview').textContent()),
    'the list previews an attachment-only message');

  // ---- 4. cancel an upload in flight
  log('4. cancel');
  let held = null;
  await alice.page.route(/\/api\/v1\/media\?/, (route) => { held = route; });
  await alice.page.getByTestId('attach-input').setInputFiles([{ name: 'slow.pdf', mimeType: 'application/pdf', buffer: pdf(20_000) }]);
  await waitFor(async () => { const c = await chips(alice); return c.length === 1 && c[0].state === 'uploading'; }, 'the upload is in progress');
  await waitFor(() => held, 'the upload request reached the network');
  check(await alice.page.locator('[data-testid="attach-chip"] progress').isVisible(), 'a progress bar shows');
  const cancel = alice.page.getByTestId('attach-remove');
  check((await cancel.getAttribute('aria-label')) === 'Cancel the upload of slow.pdf', 'the chip offers to cancel');
  await cancel.click();
  await waitFor(async () => (await chips(alice)).length === 0, 'the cancelled upload is gone');
  await held.abort().catch(() => {});
  await alice.page.unroute(/\/api\/v1\/media\?/);
  const before = (await messages(bob)).length;
  await alice.page.getByTestId('composer-input').press('Enter');        // empty, nothing attached: nothing sent
  await send(alice, 'after the cancel');
  await waitFor(async () => (await lastMsg(bob).getByTestId('message-body').textContent()) === 'after the cancel', 'bob gets the next message');
  check((await messages(bob)).length === before + 1, 'only the text message was sent');
  check(await lastMsg(bob).getByTestId('message-media').count() === 0, 'it carries no attachment');

  // ---- 4b. Send pressed while an upload runs: it goes out when it finishes
  log('4b. send waits for the upload');
  held = null;
  await alice.page.route(/\/api\/v1\/media\?/, (route) => { held = route; });
  await alice.page.getByTestId('attach-input').setInputFiles([{ name: 'later.txt', mimeType: 'text/plain', buffer: Buffer.from('later\n') }]);
  await waitFor(() => held, 'the upload request is held');
  await send(alice, 'sent when ready');
  await waitFor(async () => (await alice.page.getByTestId('attach-notice').textContent()) === 'Sending when the uploads finish…',
    'the composer says it will send when the upload finishes');
  await new Promise((r) => setTimeout(r, 300));
  check((await messages(bob)).length === before + 1, 'nothing is sent while the upload runs');
  await held.continue();
  await alice.page.unroute(/\/api\/v1\/media\?/);
  await waitFor(async () => (await lastMsg(bob).getByTestId('message-body').textContent()) === 'sent when ready', 'the message goes out after the upload');
  check((await lastMsg(bob).getByTestId('media-file-name').textContent()) === 'later.txt', 'with its attachment');
  check((await alice.page.getByTestId('composer-input').inputValue()) === '' && (await chips(alice)).length === 0, 'the composer is cleared');
  const sent = (await messages(bob)).length;

  // ---- 5. over the limit
  log('5. over the limit');
  await alice.page.getByTestId('attach-input').setInputFiles([{ name: 'huge.pdf', mimeType: 'application/pdf', buffer: pdf(2 * 1024 * 1024) }]);
  await waitFor(async () => { const c = await chips(alice); return c.length === 1 && c[0].state === 'error'; }, 'the oversized upload is refused', 15_000);
  const err = (await chips(alice))[0].text;
  check(/too large/.test(err), `the chip says why: ${err}`);
  check((await alice.page.getByTestId('attach-status').getAttribute('role')) === 'alert', 'the error is announced');
  await shot(alice, 'media-error');
  await alice.page.getByTestId('composer-input').press('Enter');
  await new Promise((r) => setTimeout(r, 300));
  check((await messages(bob)).length === sent, 'nothing is sent for a failed upload alone');
  await alice.page.getByTestId('attach-remove').click();
  await waitFor(async () => (await chips(alice)).length === 0, 'the failed chip is removed');

  // ---- 6. resumable upload with a dropped connection
  log('6. resumable upload, resumed after a dropped PATCH');
  await alice.page.evaluate(() => { window.parley.mediaConfig.resumableOver = 100_000; window.parley.mediaConfig.chunk = 64 * 1024; });
  let patches = 0, dropped = 0, heads = 0;
  await alice.page.route(/\/api\/v1\/media\/uploads\//, async (route) => {
    const m = route.request().method();
    if (m === 'HEAD') heads++;
    if (m === 'PATCH' && ++patches === 2) { dropped++; await route.abort('connectionreset'); return; }
    await route.continue();
  });
  await alice.page.getByTestId('attach-input').setInputFiles([{ name: 'long.wav', mimeType: 'audio/wav', buffer: wav(20) }]);
  await waitFor(async () => { const c = await chips(alice); return c.length === 1 && c[0].state === 'done'; }, 'the resumable upload completes', 20_000);
  check(dropped === 1 && heads >= 1 && patches >= 6, `resumed after the drop (${patches} PATCHes, ${heads} HEADs)`);
  await alice.page.unroute(/\/api\/v1\/media\/uploads\//);
  await send(alice, 'long voice note');
  await waitFor(async () => (await lastMsg(bob).getByTestId('message-body').textContent()) === 'long voice note', 'bob gets the long note');
  const cap = await lastMsg(bob).locator('.media-caption').textContent();
  check(cap === 'long.wav · 313 KB', `the whole file arrived: ${cap}`);

  // ---- 6b. a video (recorded from a canvas in the page), dropped
  log('6b. video');
  const clipSize = await alice.page.evaluate(async () => {
    const cv = document.createElement('canvas');
    cv.width = 160; cv.height = 120;
    const ctx = cv.getContext('2d');
    const rec = new MediaRecorder(cv.captureStream(15), { mimeType: 'video/webm;codecs=vp8' });
    const parts = [];
    rec.ondataavailable = (ev) => { if (ev.data.size) parts.push(ev.data); };
    const stopped = new Promise((r) => { rec.onstop = r; });
    rec.start();
    for (let i = 0; i < 12; i++) {
      ctx.fillStyle = `hsl(${i * 30}, 80%, 50%)`;
      ctx.fillRect(0, 0, 160, 120);
      await new Promise((r) => setTimeout(r, 70));
    }
    rec.stop();
    await stopped;
    const blob = new Blob(parts, { type: 'video/webm' });
    const dt = new DataTransfer();
    dt.items.add(new File([blob], 'clip.webm', { type: 'video/webm' }));
    document.getElementById('messages').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    return blob.size;
  });
  check(clipSize > 0, 'a clip was recorded');
  await waitFor(async () => { const c = await chips(alice); return c.length === 1 && c[0].state === 'done'; }, 'the clip uploads');
  await send(alice, 'a short clip');
  await waitFor(async () => (await lastMsg(bob).getByTestId('message-body').textContent()) === 'a short clip', 'bob gets the clip');
  const video = lastMsg(bob).getByTestId('media-video');
  check(await video.count() === 1 && /^\/media\/\d+\?exp=/.test(await video.getAttribute('src')), 'a video player with the signed URL');
  await waitFor(() => video.evaluate((v) => v.readyState >= 1 && v.videoWidth === 160), 'the video loads its metadata');

  // ---- 7. search with "has attachments"
  log('7. search');
  await alice.page.getByTestId('search-button').click();
  await alice.page.getByTestId('search-q').fill('quarterly');
  await alice.page.getByTestId('search-submit').click();
  const results = alice.page.getByTestId('search-result');
  await waitFor(async () => (await results.count()) === 2, 'two messages with the word');
  await alice.page.getByTestId('search-media').check();
  await waitFor(async () => (await results.count()) === 1 &&
    /report attached/.test(await results.first().getByTestId('search-snippet').textContent()), 'only the one with media');
  const al = await results.first().getByTestId('search-attachments').textContent();
  check(/3 attachments: sunset\.png, report\.pdf, voice-note\.wav/.test(al), `the result lists its attachments: ${al}`);
  await shot(alice, 'media-search');
  await results.first().locator('button').click();
  await alice.page.getByTestId('search-dialog').waitFor({ state: 'hidden' });
  await waitFor(() => alice.page.locator('[data-testid="message"]:has([data-testid="media-image"])').isVisible(), 'the result opens the message');
}, 60_000);
