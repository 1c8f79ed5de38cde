// Splits one CSV line into fields (RFC 4180 quoting: "a ""quoted"", field"). Records spanning
// several lines are not supported: the file source reads line by line to keep exact positions.

export function splitCsvLine(line: string, delimiter = ","): string[] | { error: string } {
  if (line.indexOf('"') < 0) return line.split(delimiter);
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let value = "";
      i++;
      for (;;) {
        const quoteAt = line.indexOf('"', i);
        if (quoteAt < 0) return { error: "unterminated quoted field" };
        value += line.slice(i, quoteAt);
        if (line[quoteAt + 1] === '"') {
          value += '"';
          i = quoteAt + 2;
          continue;
        }
        i = quoteAt + 1;
        break;
      }
      fields.push(value);
      if (i === line.length) return fields;
      if (line[i] !== delimiter) return { error: `unexpected character after a quoted field at column ${i + 1}` };
      i++;
    } else {
      const delimiterAt = line.indexOf(delimiter, i);
      if (delimiterAt < 0) {
        fields.push(line.slice(i));
        return fields;
      }
      fields.push(line.slice(i, delimiterAt));
      i = delimiterAt + 1;
    }
  }
}
